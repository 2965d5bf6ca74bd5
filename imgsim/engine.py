"""One engine for the app and the command line.

:class:`Engine` opens a catalogue with its stores and models once and answers ``search``,
``compare`` and ``reconstruct``. It only reads: building is :mod:`imgsim.build`'s job. Models
load lazily on first use and are kept for the life of the engine; the Streamlit app keeps one
engine per catalogue per process and shares it between sessions, so everything here is safe to
call from several threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgsim import approaches as approaches_mod
from imgsim.approaches import AUTOENCODER, PRETRAINED, TUNED  # noqa: F401 (re-exported)
from imgsim.index.exact import Index, Metric
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.images import ImageSource, crop, decode_image, to_square
from imgsim.storage.artifacts import ArtifactError
from imgsim.storage.stores import Store

__all__ = ["AUTOENCODER", "PRETRAINED", "TUNED", "Engine", "Reconstruction", "SearchResult"]
#: Largest side a query photo is decoded at: region search's 448 px pass (JPEG draft mode makes a
#: 12 MP photo cheap: 63 ms against 375 ms at 1024 in the phone-photo benchmark).
QUERY_MAX_SIDE = 448


@dataclasses.dataclass
class SearchResult:
    """The answer to one query.

    Attributes:
        approach: Which approach answered.
        items: One row per hit, best first: ``rank``, ``row``, ``score``, and the catalogue's
            columns (``id``, ``name``, ``category``, ``label``, ``thumb_path``, metadata).
        query_image: The query as the model saw it, ``(S, S, 3)`` uint8.
        metric: ``cosine`` (score: higher is closer) or ``euclidean`` (score: a distance).
        seconds: Wall time from the query as given to the results: decoding (when the query was
            bytes or a path), embedding and search.
        search_seconds: Wall time of the search step alone.
        label: The approach's display label, naming the model that answered.
        auto_box: With region search, the automatic product box found in the query's pixels.
        regions: How many query vectors were searched (1 without region search).
    """

    approach: str
    items: pd.DataFrame
    query_image: np.ndarray
    metric: str
    seconds: float
    search_seconds: float
    label: str = ""
    auto_box: tuple[int, int, int, int] | None = None
    regions: int = 1

    @property
    def ids(self) -> list[str]:
        """Ids of the hits, best first."""
        return self.items["id"].tolist()

    def label_precision(self, label: str, column: str = "label") -> float:
        """The fraction of hits whose ``column`` equals ``label`` (0 when there are no hits)."""
        if self.items.empty or column not in self.items:
            return 0.0
        return float((self.items[column] == label).mean())


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


def decode_query(image: ImageSource) -> np.ndarray:
    """Decodes a query photo the way :meth:`Engine.search` does (longest side at most 448).

    Boxes given to ``search`` are in the pixels of this array.
    """
    return decode_image(image, max_side=QUERY_MAX_SIDE)


BACKEND_FILE = "backend.json"


def read_backend(catalog: Catalog) -> dict[str, Any]:
    """The catalogue's vector backend: ``{"kind": "local"}`` or Milvus's URI and approaches.

    ``python -m imgsim export CATALOG --to URI`` writes it (see :func:`imgsim.build.export`).
    """
    import json

    path = catalog.root / BACKEND_FILE
    if not path.is_file():
        return {"kind": "local"}
    try:
        backend = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path} is unreadable ({type(err).__name__}); export the catalogue again") from err
    if backend.get("kind") not in ("local", "milvus") or (backend["kind"] == "milvus" and not backend.get("uri")):
        raise ArtifactError(f"{path} names no known backend; export the catalogue again")
    return backend


def artifact_version(catalog: Catalog) -> str:
    """Changes whenever the catalogue, one of its stores or one of its models is rewritten.

    A cache key for anything derived from the catalogue's artifacts (the app's engine cache).
    """
    digest = hashlib.sha256(str(catalog.root.resolve()).encode())
    files = [catalog.root / "manifest.json", catalog.root / BACKEND_FILE,
             *sorted(catalog.root.glob("stores/*/manifest.json")),
             *sorted(catalog.root.glob("models/*/manifest.json"))]
    for path in files:
        try:
            digest.update(f"{path.relative_to(catalog.root)}:{path.stat().st_mtime_ns}".encode())
        except FileNotFoundError:
            continue
    return digest.hexdigest()[:16]


def current_version(path: str | os.PathLike) -> str:
    """:func:`artifact_version` of the catalogue at ``path`` without loading its items."""
    return artifact_version(Catalog(Path(path), {}, pd.DataFrame()))


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
        self._errors: pd.DataFrame | None = None
        self._lock = threading.RLock()
        self.version = artifact_version(catalog)
        self.backend = read_backend(catalog)
        self._milvus = None
        self._embedders: dict[str, Any] = {}
        self._last_regions: tuple | None = None
        self._no_regions: dict[str, str] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> Engine:
        """Opens the catalogue at ``path``; raises :class:`imgsim.ingest.catalog.CatalogError`."""
        return cls(Catalog.load(path))

    # -- what is available -------------------------------------------------------------------

    def approaches(self) -> list[str]:
        """Approaches whose store is built and current for this catalogue, in display order."""
        return [a for a in approaches_mod.APPROACHES if self._store(a) is not None]

    def unavailable(self) -> dict[str, str]:
        """For each approach that cannot be used, why, in plain words."""
        return {a: self._problems.get(a, "not built") for a in approaches_mod.APPROACHES
                if self._store(a) is None}

    def label(self, approach: str) -> str:
        """The approach's display label, naming the model its store was built with."""
        store = self._store(approach)
        return approaches_mod.get(approach).label(store.manifest if store else None)

    def categories(self) -> list[str]:
        """The catalogue's non-empty categories, sorted."""
        return sorted(c for c in self.items["category"].unique() if c)

    def _store(self, approach: str) -> Store | None:
        with self._lock:
            if approach in self._stores:
                return self._stores[approach]
            spec = approaches_mod.get(approach)
            root = spec.store_dir(self.catalog)
            if not root.exists():
                self._problems[approach] = spec.not_built_reason(self.catalog)
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
        approaches_mod.get(approach)
        store = self._store(approach)
        if store is None:
            raise ValueError(f"{approach} is not available for {self.catalog.name}: {self._problems[approach]}")
        return store

    def index(self, approach: str, metric: str | None = None):
        """The search index of ``approach`` (loaded once per metric).

        The store's approximate (HNSW) index when the build made one for it and it still
        matches the store (see :func:`imgsim.build.ensure_ann`), else exact search. Both answer
        ``search(queries, k, mask=..., exclude=...)`` with the same :class:`~imgsim.index.exact.Hits`.
        """
        store = self.store(approach)
        default = Metric(store.manifest.get("metric", "cosine"))
        metric = Metric(metric or default)
        key = (approach, metric.value)
        with self._lock:
            if key not in self._indexes:
                self._indexes[key] = self._approximate(approach, store) if metric is default else None
                if self._indexes[key] is None:
                    self._indexes[key] = Index(store.embeddings, metric)
            return self._indexes[key]

    def _approximate(self, approach: str, store: Store):
        """The store's ANN index if there is a current one, else None."""
        path = store.root.with_name(f"{approach}.ann")
        if not path.is_dir():
            return None
        from imgsim.index.hnsw import AnnIndex

        try:
            return AnnIndex.load(path, store.embeddings)
        except ArtifactError:
            return None  # stale (the catalogue changed since): exact search stays correct

    def search_backend(self, approach: str) -> str:
        """How ``approach`` is searched: ``milvus (URI)``, ``approximate (HNSW)`` or ``exact``."""
        if self._uses_milvus(approach):
            return f"milvus ({self.backend['uri']})"
        return "approximate (HNSW)" if type(self.index(approach)).__name__ == "AnnIndex" else "exact"

    def _uses_milvus(self, approach: str) -> bool:
        return self.backend.get("kind") == "milvus" and approach in self.backend.get("approaches", [])

    def _milvus_search(self, approach: str, vector: np.ndarray, k: int, category: str | None,
                       exclude_id: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the ``k`` nearest items, asked of Milvus (filters pushed down)."""
        from imgsim.index.milvus import MilvusBackend, collection_name, hits_rows
        from imgsim.storage.stores import model_spec

        with self._lock:
            if self._milvus is None:
                self._milvus = MilvusBackend(self.backend["uri"])
        if category:
            self._mask(category)  # an unknown category is an error here too, not an empty answer
        model = self.model(approach)
        found = self._milvus.search(collection_name(self.catalog.name, approach), vector[None], k,
                                    category=category, exclude_ids=[exclude_id] if exclude_id else None,
                                    expect=model_spec(approach, model))
        metric = self.store(approach).manifest.get("metric", "cosine")
        rows, scores = hits_rows(found, self.items["id"].to_numpy(), metric)
        return rows[0][:k], scores[0][:k]

    # -- models ---------------------------------------------------------------------------------

    def model(self, approach: str):
        """The model that embeds queries for ``approach``, loaded once and checked against its store.

        Raises:
            ValueError: The approach has no store.
            imgsim.storage.stores.StoreMismatchError: The model on disk is not the one the store was built with.
        """
        with self._lock:
            if approach in self._models:
                return self._models[approach]
            store = self.store(approach)
            model = approaches_mod.get(approach).load_model(self.catalog, store.manifest, self.model)
            from imgsim.storage.stores import model_spec

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
            embedder = self.region_embedder(approach)
            if embedder is not None:  # each new input shape traces the graph once (about a second)
                for shape in ((336, 448, 3), (448, 336, 3), (448, 448, 3)):
                    embedder.embed(np.random.default_rng(0).integers(0, 200, shape, dtype=np.uint8))

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
        box: tuple[int, int, int, int] | None = None,
        regions: bool | None = None,
    ) -> SearchResult:
        """The ``k`` catalogue items most similar to ``image``.

        Args:
            image: A path, bytes, file object, or an already decoded ``(H, W, 3)`` uint8 array.
            approach: A name from :data:`imgsim.approaches.APPROACHES`.
            k: Number of results (fewer if the catalogue or filter has fewer items).
            category: Only items of this category.
            exclude_id: Leave this item out (a catalogue item used as the query).
            metric: Override the store's metric (``cosine`` or ``euclidean``).
            box: Search with this region of the image only: ``(x0, y0, x1, y1)`` in the pixels of
                the decoded image (see :func:`decode_query`).
            regions: Region search (see :mod:`imgsim.approaches.regions`): the photo becomes a few region
                vectors (the whole photo, grid windows and automatic product boxes) and each item
                scores by its best region, which finds a product photographed in a scene. ``None``
                (default) turns it on where the approach supports it; ignored with ``box``.

        Raises:
            imgsim.ingest.images.ImageDecodeError: The image cannot be decoded.
            ValueError: Bad ``k`` or ``box``, unknown approach or category, or the approach is
                unavailable.
        """
        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        model = self.model(approach)
        started = time.perf_counter()
        rgb = _as_rgb(image, QUERY_MAX_SIDE)
        if box is not None:
            rgb = crop(rgb, box)
        square = to_square(rgb, model.image_size)
        embedder = self.region_embedder(approach) if box is None and regions is not False else None
        if embedder is None:
            if regions and box is None:
                raise ValueError(f"region search is not available for {approach}: {self._no_regions[approach]}")
            product = self._product_box(rgb) if box is None and regions is not False else None
            if product is not None:  # the latent of a photo is mostly scene: search the product's box
                square = to_square(crop(rgb, product), model.image_size)
            vector = model.embed(square[None])[0]
            return self._search_vector(approach, vector, square, k, category, exclude_id, metric, started)
        query = self._region_query(embedder, rgb)
        vectors = approaches_mod.get(approach).region_vectors(model, query.vectors)
        result = self._search_regions(approach, vectors, query, square, k, category, exclude_id, metric, started)
        return result

    def region_embedder(self, approach: str):
        """The :class:`imgsim.approaches.regions.RegionEmbedder` for ``approach``, or None where it has none.

        Regions need features pooled like the store's: an approach that supports them, and a
        pretrained store with plain average pooling (GeM or flip stores are searched whole).
        """
        from imgsim.approaches.regions import RegionConfig, RegionEmbedder

        with self._lock:
            if approach in self._embedders:
                return self._embedders[approach]
            why = None
            if not approaches_mod.get(approach).supports_regions:
                why = "its vectors are not CNN features that can be pooled over regions"
            else:
                base = self.store(PRETRAINED if PRETRAINED in self.approaches() else approach).manifest
                if base.get("options") != {"pooling": "avg", "flip": False}:
                    why = f"the store was built with pooling options {base.get('options')}"
                elif not base.get("model", "").startswith("efficientnet_lite"):
                    why = f"{base.get('model')} has no feature map to pool regions from"
            embedder = None
            if why is None:
                model_name = self.store(PRETRAINED).manifest["model"] if PRETRAINED in self.approaches() \
                    else "efficientnet_lite0"
                shared = next((e for e in self._embedders.values()
                               if e is not None and e.extractor_name == model_name), None)
                embedder = shared or RegionEmbedder(model_name, RegionConfig())
            self._no_regions[approach] = why or ""
            self._embedders[approach] = embedder
            return embedder

    def _product_box(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The automatic product box of a photo (None for a studio shot, or without CNN features).

        Approaches whose vectors cannot be pooled over regions (the autoencoder's latent) search
        with this crop of a photo: on simulated phone photos it finds the product in the top 10
        six times as often as the whole photo (``benchmarks/autoencoder.py --phone``).
        """
        embedder = next((self.region_embedder(a) for a in self.approaches()
                         if approaches_mod.get(a).supports_regions), None)
        return self._region_query(embedder, rgb).auto_box if embedder is not None else None

    def _region_query(self, embedder, rgb: np.ndarray):
        """``embedder.embed(rgb)``, remembered for the same array: one photo searched by every
        approach (Compare) is embedded once, not once per approach."""
        cached = self._last_regions
        if cached is not None and cached[0] is rgb and cached[1] is embedder:
            return cached[2]
        query = embedder.embed(rgb)
        self._last_regions = (rgb, embedder, query)
        return query

    def _search_regions(self, approach: str, vectors: np.ndarray, query, square: np.ndarray, k: int,
                        category: str | None, exclude_id: str | None, metric: str | None,
                        started: float) -> SearchResult:
        """Each item scored by its best region; any index (exact, HNSW, Milvus) answers it.

        Exact search scores all regions in one product; an approximate backend is asked for each
        region's top ``k`` and the lists are merged by best score, which gives the same top ``k``
        as the exact max (an item in the overall top k is in its best region's top k).
        """
        from imgsim.approaches.regions import search_regions

        t0 = time.perf_counter()
        index = self.index(approach, metric)
        exclude = None
        if exclude_id is not None:
            matches = np.flatnonzero(self.items["id"].to_numpy() == exclude_id)
            exclude = [int(matches[0]) if len(matches) else -1]
        if isinstance(index, Index) and not self._uses_milvus(approach):
            hits = search_regions(index, vectors, k, mask=self._mask(category), exclude=exclude,
                                  kinds=query.kinds)
            rows, scores, metric_name = hits.rows[0], hits.scores[0], index.metric.value
        else:
            rows, scores, metric_name = self._merge_region_hits(approach, index, vectors, k, category,
                                                                exclude, exclude_id)
        search_seconds = time.perf_counter() - t0
        result = SearchResult(approach, self._hits_frame(rows, scores), square, metric_name,
                              time.perf_counter() - started, search_seconds, self.label(approach))
        result.auto_box = query.auto_box
        result.regions = len(vectors)
        return result

    def _merge_region_hits(self, approach, index, vectors, k, category, exclude, exclude_id):
        best: dict[int, float] = {}
        metric_name = self.store(approach).manifest.get("metric", "cosine")
        higher = metric_name == "cosine"
        for vector in vectors:
            if self._uses_milvus(approach):
                rows, scores = self._milvus_search(approach, vector, k, category, exclude_id)
            else:
                hits = index.search(vector[None], k, mask=self._mask(category), exclude=exclude)
                rows, scores = hits.rows[0], hits.scores[0]
            for row, score in zip(rows.tolist(), scores.tolist()):
                if row not in best or (score > best[row] if higher else score < best[row]):
                    best[row] = score
        order = sorted(best.items(), key=lambda rs: ((-rs[1] if higher else rs[1]), rs[0]))[:k]
        rows = np.array([r for r, _ in order], dtype=np.int64)
        return rows, np.array([s for _, s in order], dtype=np.float32), metric_name

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
        if self._uses_milvus(approach) and metric in (None, self.store(approach).manifest.get("metric")):
            t0 = time.perf_counter()
            rows, scores = self._milvus_search(approach, vector, k, category, exclude_id)
            search_seconds = time.perf_counter() - t0
            return SearchResult(approach, self._hits_frame(rows, scores), square,
                                self.store(approach).manifest.get("metric", "cosine"),
                                time.perf_counter() - started, search_seconds, self.label(approach))
        index = self.index(approach, metric)
        exclude = None
        if exclude_id is not None:
            matches = np.flatnonzero(self.items["id"].to_numpy() == exclude_id)
            exclude = [int(matches[0]) if len(matches) else -1]
        t0 = time.perf_counter()
        hits = index.search(vector[None], k, mask=self._mask(category), exclude=exclude)
        search_seconds = time.perf_counter() - t0
        return SearchResult(approach, self._hits_frame(hits.rows[0], hits.scores[0]), square,
                            index.metric.value, time.perf_counter() - started, search_seconds,
                            self.label(approach))

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
        rgb = _as_rgb(image, QUERY_MAX_SIDE)
        return {a: self.search(rgb, a, k, category=category) for a in approaches}

    def reconstruct(self, image: ImageSource | np.ndarray | None = None, *,
                    row: int | None = None, box: tuple[int, int, int, int] | None = None) -> Reconstruction:
        """The autoencoder's reconstruction of ``image`` or of catalogue item ``row``.

        A photo is cropped to ``box``, else to its automatic product box (as a search does), so
        the reconstruction is the studio picture the autoencoder imagines for the product.
        """
        model = self.model(AUTOENCODER)
        if row is not None:
            square = self.catalog.load_square(row, model.image_size)
        else:
            rgb = _as_rgb(image, QUERY_MAX_SIDE)
            product = box or self._product_box(rgb)
            square = to_square(crop(rgb, product) if product else rgb, model.image_size)
        recon, mse, psnr = model.errors(square[None])
        error = np.abs(recon[0] - square.astype(np.float32) / 255.0).mean(axis=2)
        return Reconstruction(square, (recon[0] * 255).round().astype(np.uint8), error,
                              float(mse[0]), float(psnr[0]))

    def reconstruction_errors(self, batch_size: int = 64) -> pd.DataFrame:
        """Per-item reconstruction MSE and PSNR over the whole catalogue (computed once per engine).

        Returns:
            A frame with ``row``, ``id``, ``name``, ``category``, ``mse``, ``psnr``.
        """
        from imgsim.approaches.autoencoder import psnr
        from imgsim.storage.stores import iter_batches

        model = self.model(AUTOENCODER)
        with self._lock:
            if self._errors is None:
                mse = np.concatenate([model.errors(batch)[1] for batch in
                                      iter_batches(self.catalog.thumb_paths(), model.image_size, batch_size)])
                self._errors = pd.DataFrame({
                    "row": np.arange(len(mse)), "id": self.items["id"], "name": self.items["name"],
                    "category": self.items["category"], "mse": mse, "psnr": psnr(mse)})
            return self._errors.copy()

    def drift(self, retrain_ratio: float = 1.5, retrain_share: float = 0.2) -> list[str]:
        """How far the catalogue has moved from what its learned models were fitted on.

        Items added after the autoencoder was trained are reconstructed and their mean error
        compared with the validation error at training time; retraining is suggested when it is
        ``retrain_ratio`` times larger, or when the new items are more than ``retrain_share`` of
        the catalogue. The same share rule applies to the tuned projection.

        Returns:
            One line per learned approach, in plain words.
        """
        lines = []
        added = self.items["added_at"] if "added_at" in self.items else pd.Series([""] * len(self.items))
        if AUTOENCODER in self.approaches():
            model = self.model(AUTOENCODER)
            trained = str(model.manifest.get("created", ""))
            rows = np.flatnonzero((added > trained).to_numpy())
            line = f"autoencoder: {len(rows)} of {len(self.items)} items added since it was trained ({trained})"
            if len(rows):
                from imgsim.storage.stores import iter_batches

                paths = [self.catalog.thumb_paths()[r] for r in rows[:2000]]
                mse = float(np.concatenate([model.errors(b)[1] for b in
                                            iter_batches(paths, model.image_size, 64)]).mean())
                ratio = mse / max(float(model.manifest["val_mse"]), 1e-12)
                line += f"; their reconstruction MSE {mse:.4f} is {ratio:.1f}x the validation MSE"
                if ratio > retrain_ratio or len(rows) > retrain_share * len(self.items):
                    line += f"; retrain: python -m imgsim train {self.catalog.root}"
            lines.append(line)
        if TUNED in self.approaches():
            fitted = int(self.model(TUNED).manifest.get("fitted_items", 0))
            fitted_at = str(self.model(TUNED).manifest.get("created", ""))
            new = int((added > fitted_at).sum())
            line = f"tuned: fitted on {fitted} labelled items; {new} items added since"
            if new > retrain_share * len(self.items):
                line += f"; refit: python -m imgsim train {self.catalog.root} --approach tuned"
            lines.append(line)
        return lines

    def embedding_map(self, approach: str, limit: int = 3000, seed: int = 0) -> pd.DataFrame:
        """A 2-D PCA of up to ``limit`` items' embeddings, for a scatter plot.

        Returns:
            A frame with ``x``, ``y``, ``row`` and ``category`` (``(none)`` when empty).
        """
        if limit < 2:
            raise ValueError(f"`limit` must be >= 2. Received: limit={limit}")
        x = np.asarray(self.store(approach).embeddings, dtype=np.float64)
        rows = np.sort(np.random.default_rng(seed).permutation(len(x))[:limit])
        x = x[rows] - x[rows].mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T if vt.shape[0] >= 2 else np.zeros((len(rows), 2))
        return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "row": rows,
                             "category": self.items["category"].iloc[rows].replace("", "(none)").to_numpy()})

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
        :func:`imgsim.approaches.tuned.cross_validated_scores`).

        Returns:
            ``{"k", "label_column", "n", "chance", <approach>: {"precision@1", "precision@k",
            "map@k", ["curve"]}}``.
        """
        from imgsim.evaluate import chance_precision

        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        column = label_column or self.catalog.label_column()
        labels = self.labels(column)
        n_labelled = int((labels != "").sum())
        if n_labelled < 2:
            raise ValueError(f"catalogue {self.catalog.name} has fewer than 2 items labelled by {column!r}")
        report: dict[str, Any] = {"k": k, "label_column": column, "n": n_labelled,
                                  "chance": chance_precision(labels)}
        def embeddings_of(name: str) -> np.ndarray:
            return np.asarray(self.store(name).embeddings)

        for approach in approaches or self.approaches():
            metric = self.store(approach).manifest.get("metric", "cosine")
            report[approach] = approaches_mod.get(approach).evaluate(embeddings_of, labels, k, metric, curve_k)
        return report
