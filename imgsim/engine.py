"""One engine for the app and the command line.

:class:`Engine` opens a catalogue with its stores and models once and answers ``search``,
``compare`` and ``reconstruct``. Models load lazily on first use and are kept for the life of
the engine; the Streamlit app keeps one engine per catalogue per process.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgsim.artifacts import ArtifactError
from imgsim.catalog import Catalog
from imgsim.images import ImageSource, decode_image, to_square
from imgsim.search import Index, Metric
from imgsim.store import Store, store_path

PRETRAINED, AUTOENCODER, TUNED = "pretrained", "autoencoder", "tuned"
APPROACHES = (PRETRAINED, AUTOENCODER, TUNED)
APPROACH_LABELS = {
    PRETRAINED: "Pretrained CNN (EfficientNet-Lite0)",
    AUTOENCODER: "Autoencoder latent space",
    TUNED: "Catalogue-tuned CNN features",
}
AUTOENCODER_DIR = Path("models") / "autoencoder"


@dataclasses.dataclass
class SearchResult:
    """The answer to one query.

    Attributes:
        approach: Which approach answered.
        items: One row per hit, best first: ``rank``, ``row``, ``score``, and the catalogue's
            columns (``id``, ``name``, ``category``, ``label``, ``thumb_path``, metadata).
        query_image: The query as the model saw it, ``(S, S, 3)`` uint8.
        metric: ``cosine`` (score: higher is closer) or ``euclidean`` (score: a distance).
        seconds: Wall time of embedding plus search.
        search_seconds: Wall time of the search step alone.
    """

    approach: str
    items: pd.DataFrame
    query_image: np.ndarray
    metric: str
    seconds: float
    search_seconds: float

    @property
    def ids(self) -> list[str]:
        """Ids of the hits, best first."""
        return self.items["id"].tolist()


@dataclasses.dataclass
class Reconstruction:
    """The autoencoder's view of one image: input, output, per-pixel error, MSE and PSNR."""

    original: np.ndarray
    reconstruction: np.ndarray
    error_map: np.ndarray
    mse: float
    psnr: float


def _as_rgb(image: ImageSource | np.ndarray, max_side: int) -> np.ndarray:
    """``image`` itself when already decoded, else :func:`decode_image` of it."""
    return image if isinstance(image, np.ndarray) else decode_image(image, max_side=max_side)


class Engine:
    """A catalogue with its stores and models, loaded once.

    Args:
        catalog: A loaded :class:`Catalog`, or use :meth:`open`.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.items = catalog.ok.copy()  # the catalogue's cached frame stays as it is
        self.items["thumb_path"] = [str(p) for p in catalog.thumb_paths()]
        self._stores: dict[str, Store] = {}
        self._indexes: dict[tuple[str, str], Index] = {}
        self._models: dict[str, Any] = {}
        self._problems: dict[str, str] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> Engine:
        """Opens the catalogue at ``path``; raises :class:`imgsim.catalog.CatalogError`."""
        return cls(Catalog.load(path))

    # -- what is available -------------------------------------------------------------------

    def approaches(self) -> list[str]:
        """Approaches whose store is built and current for this catalogue."""
        return [a for a in APPROACHES if self._store(a) is not None]

    def unavailable(self) -> dict[str, str]:
        """For each approach that cannot be used, why (and how to fix it)."""
        out = {}
        for approach in APPROACHES:
            if self._store(approach) is None:
                out[approach] = self._problems.get(approach, "not built")
        return out

    def categories(self) -> list[str]:
        """The catalogue's non-empty categories, sorted."""
        return sorted(c for c in self.items["category"].unique() if c)

    def _store(self, approach: str) -> Store | None:
        if approach in self._stores:
            return self._stores[approach]
        root = store_path(self.catalog, approach)
        if not root.exists():
            build = f"python -m imgsim build {self.catalog.manifest.get('source')} --out {self.catalog.root}"
            if approach == TUNED:
                labelled = (self.items["label"].fillna("") != "").sum() if "label" in self.items else 0
                why = ("the catalogue has no labels to tune on" if labelled < 2
                       else "not fitted yet")
                self._problems[approach] = (f"{why}; with a label column: {build} "
                                            "--approaches pretrained,autoencoder,tuned --label-column COL")
            else:
                self._problems[approach] = f"no {approach} store yet: {build}"
            return None
        try:
            store = Store.load(root, self.catalog)
        except ArtifactError as err:
            self._problems[approach] = str(err)
            return None
        self._stores[approach] = store
        return store

    def store(self, approach: str) -> Store:
        """The store of ``approach``; raises ``ValueError`` saying why it is unavailable."""
        if approach not in APPROACHES:
            raise ValueError(f"`approach` must be one of {', '.join(APPROACHES)}. Received: {approach!r}")
        store = self._store(approach)
        if store is None:
            raise ValueError(f"{approach} is not available for {self.catalog.name}: {self._problems[approach]}")
        return store

    def index(self, approach: str, metric: str | None = None) -> Index:
        """The search index of ``approach`` (built once per metric)."""
        store = self.store(approach)
        metric = Metric(metric or store.manifest.get("metric", "cosine"))
        key = (approach, metric.value)
        if key not in self._indexes:
            self._indexes[key] = Index(store.embeddings, metric)
        return self._indexes[key]

    # -- models ---------------------------------------------------------------------------------

    def model(self, approach: str):
        """The model that embeds queries for ``approach``, loaded once and checked against its store.

        Raises:
            ValueError: The approach has no store.
            imgsim.store.StoreMismatchError: The model on disk is not the one the store was built with.
        """
        if approach in self._models:
            return self._models[approach]
        store = self.store(approach)
        manifest = store.manifest
        if approach == PRETRAINED:
            from imgsim.features import ExtractorOptions, load_extractor

            model = load_extractor(manifest["model"], ExtractorOptions(**manifest["options"]))
        elif approach == AUTOENCODER:
            from imgsim.autoencoder import Autoencoder

            model = Autoencoder.load(self.catalog.root / AUTOENCODER_DIR)
        else:
            from imgsim.tuned import TunedExtractor

            model = TunedExtractor.load(self.catalog.root / "models" / "tuned", self.model(PRETRAINED))
        from imgsim.store import model_spec

        Store.load(store.root, self.catalog, model_spec(approach, model))
        self._models[approach] = model
        return model

    def warm_up(self) -> None:
        """Loads every available approach's model and runs it once, so the first query is fast.

        The first call of a Keras model traces its graph (about a second); a server does it at
        start-up rather than on a user's first photo.
        """
        for approach in self.approaches():
            model = self.model(approach)
            model.embed(np.zeros((1, model.image_size, model.image_size, 3), np.uint8))

    # -- queries --------------------------------------------------------------------------------

    def _hits_frame(self, rows: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        frame = self.items.iloc[rows].copy()
        frame.insert(0, "score", scores)
        frame.insert(0, "row", rows)
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        return frame.reset_index(drop=True)

    def _mask(self, category: str | None) -> np.ndarray | None:
        if not category:
            return None
        mask = (self.items["category"] == category).to_numpy()
        if not mask.any():
            raise ValueError(f"no item has category {category!r}")
        return mask

    def search(
        self,
        image: ImageSource | np.ndarray,
        approach: str = PRETRAINED,
        k: int = 10,
        *,
        category: str | None = None,
        exclude_id: str | None = None,
        metric: str | None = None,
    ) -> SearchResult:
        """The ``k`` catalogue items most similar to ``image``.

        Args:
            image: A path, bytes, file object, or an already decoded ``(H, W, 3)`` uint8 array.
            approach: ``pretrained``, ``autoencoder`` or ``tuned``.
            k: Number of results (fewer if the catalogue or filter has fewer items).
            category: Only items of this category.
            exclude_id: Leave this item out (a catalogue item used as the query).
            metric: Override the store's metric (``cosine`` or ``euclidean``).

        Raises:
            imgsim.images.ImageDecodeError: The image cannot be decoded.
            ValueError: Bad ``k``, unknown approach or category, or the approach is unavailable.
        """
        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        model = self.model(approach)
        started = time.perf_counter()
        rgb = _as_rgb(image, 2 * model.image_size)
        square = to_square(rgb, model.image_size)
        vector = model.embed(square[None])[0]
        return self._search_vector(approach, vector, square, k, category, exclude_id, metric, started)

    def search_item(self, row: int, approach: str = PRETRAINED, k: int = 10, *,
                    category: str | None = None, metric: str | None = None) -> SearchResult:
        """"More like this": item ``row`` of the catalogue as the query, itself excluded."""
        if not 0 <= row < len(self.items):
            raise ValueError(f"`row` must be in [0, {len(self.items)}). Received: row={row}")
        started = time.perf_counter()
        store = self.store(approach)
        vector = np.asarray(store.embeddings[row])
        square = self.catalog.load_square(row, int(store.manifest["image_size"]))
        return self._search_vector(approach, vector, square, k, category,
                                   self.items["id"].iloc[row], metric, started)

    def _search_vector(self, approach: str, vector: np.ndarray, square: np.ndarray, k: int,
                       category: str | None, exclude_id: str | None, metric: str | None,
                       started: float) -> SearchResult:
        index = self.index(approach, metric)
        exclude = None
        if exclude_id is not None:
            matches = np.flatnonzero(self.items["id"].to_numpy() == exclude_id)
            exclude = [int(matches[0]) if len(matches) else -1]
        t0 = time.perf_counter()
        hits = index.search(vector[None], k, mask=self._mask(category), exclude=exclude)
        search_seconds = time.perf_counter() - t0
        return SearchResult(approach, self._hits_frame(hits.rows[0], hits.scores[0]), square,
                            index.metric.value, time.perf_counter() - started, search_seconds)

    def compare(self, image: ImageSource | np.ndarray, k: int = 10, *,
                approaches: list[str] | None = None, row: int | None = None,
                category: str | None = None) -> dict[str, SearchResult]:
        """The same query through several approaches (all available ones by default).

        Args:
            image: The query (ignored when ``row`` is given).
            k: Results per approach.
            approaches: Which approaches; default: every available one.
            row: Use catalogue item ``row`` as the query instead (itself excluded).
            category: Only items of this category.
        """
        approaches = approaches or self.approaches()
        if row is not None:
            return {a: self.search_item(row, a, k, category=category) for a in approaches}
        rgb = _as_rgb(image, 448)
        return {a: self.search(rgb, a, k, category=category) for a in approaches}

    def reconstruct(self, image: ImageSource | np.ndarray | None = None, *,
                    row: int | None = None) -> Reconstruction:
        """The autoencoder's reconstruction of ``image`` or of catalogue item ``row``."""
        model = self.model(AUTOENCODER)
        if row is not None:
            square = self.catalog.load_square(row, model.image_size)
        else:
            rgb = _as_rgb(image, 2 * model.image_size)
            square = to_square(rgb, model.image_size)
        recon, mse, psnr = model.errors(square[None])
        error = np.abs(recon[0] - square.astype(np.float32) / 255.0).mean(axis=2)
        return Reconstruction(square, (recon[0] * 255).round().astype(np.uint8), error,
                              float(mse[0]), float(psnr[0]))

    def reconstruction_errors(self, batch_size: int = 64) -> pd.DataFrame:
        """Per-item reconstruction MSE and PSNR over the whole catalogue (cached on disk).

        Returns:
            A frame with ``row``, ``id``, ``name``, ``category``, ``mse``, ``psnr``.
        """
        from imgsim.store import iter_batches

        model = self.model(AUTOENCODER)
        cache = self.catalog.root / AUTOENCODER_DIR / "errors.parquet"
        if cache.exists():
            frame = pd.read_parquet(cache)
            if len(frame) == len(self.items) and frame["id"].tolist() == self.items["id"].tolist():
                return frame
        mses = []
        for batch in iter_batches(self.catalog.thumb_paths(), model.image_size, batch_size):
            mses.append(model.errors(batch)[1])
        mse = np.concatenate(mses)
        from imgsim.autoencoder import psnr

        frame = pd.DataFrame({"row": np.arange(len(mse)), "id": self.items["id"], "name": self.items["name"],
                              "category": self.items["category"], "mse": mse, "psnr": psnr(mse)})
        tmp = cache.with_name(".errors.tmp.parquet")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, cache)
        return frame

    # -- evaluation -------------------------------------------------------------------------------

    def labels(self, label_column: str | None = None) -> np.ndarray:
        """The label of every item (``label`` column by default).

        Raises:
            ValueError: The catalogue has no such column.
        """
        column = label_column or self.catalog.label_column()
        if column not in self.items.columns:
            columns = ", ".join(c for c in self.items.columns if c not in ("thumb", "thumb_path", "message"))
            raise ValueError(f"catalogue {self.catalog.name} has no column {column!r}. Columns: {columns}")
        return self.items[column].fillna("").astype(str).to_numpy()

    def evaluate(self, label_column: str | None = None, k: int = 10, *,
                 approaches: list[str] | None = None, curve_k: int = 0) -> dict[str, Any]:
        """Leave-one-out retrieval quality of each approach, by ``label_column``.

        ``tuned`` is scored only on items whose labels were held out of its fit (see
        :func:`imgsim.tuned.cross_validated_scores`).

        Returns:
            ``{"k", "label_column", "n", "chance", <approach>: {"precision@1", "precision@k",
            "map@k", ["curve"]}}``.
        """
        from imgsim.evaluate import chance_precision, evaluate_embeddings

        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        column = label_column or self.catalog.label_column()
        labels = self.labels(column)
        n_labelled = int((labels != "").sum())
        if n_labelled < 2:
            raise ValueError(f"catalogue {self.catalog.name} has fewer than 2 items labelled by {column!r}")
        report: dict[str, Any] = {"k": k, "label_column": column, "n": n_labelled,
                                  "chance": chance_precision(labels)}
        for approach in approaches or self.approaches():
            store = self.store(approach)
            if approach == TUNED:  # never scored on items whose labels fitted the projection
                from imgsim.tuned import cross_validated_scores

                report[approach] = cross_validated_scores(
                    np.asarray(self.store(PRETRAINED).embeddings), labels, k, curve_k=curve_k)
                continue
            report[approach] = evaluate_embeddings(np.asarray(store.embeddings), labels, k,
                                                   store.manifest.get("metric", "cosine"), curve_k=curve_k)
        return report
