"""One engine for the app and the command line.

:class:`Engine` opens a catalogue once and answers ``search``, ``compare`` and ``reconstruct``.
It only composes: :class:`~imgsim.loader.Loader` loads stores, models and search backends,
:class:`~imgsim.query.QueryPipeline` answers queries, :class:`~imgsim.views.Views` makes the
autoencoder's views and the UI's analytics. It only reads: building is :mod:`imgsim.build`'s
job. Everything loads lazily on first use and is kept for the life of the engine; the Streamlit
app keeps one engine per catalogue per process and shares it between sessions, so everything
here is safe to call from several threads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pandas as pd

from imgsim import approaches as approaches_mod
from imgsim.approaches import AUTOENCODER, PRETRAINED, TUNED  # noqa: F401 (re-exported)
from imgsim.approaches.base import Drift
from imgsim.index import SearchBackend
from imgsim.index.conditions import Condition, column_choices, filterable_columns
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.images import ImageSource
from imgsim.loader import Loader, artifact_version, current_version  # noqa: F401 (re-exported)
from imgsim.query import QUERY_MAX_SIDE, QueryPipeline, SearchResult, as_rgb, decode_query  # noqa: F401
from imgsim.storage.stores import Store
from imgsim.views import Reconstruction, Views

__all__ = ["AUTOENCODER", "PRETRAINED", "TUNED", "Engine", "Reconstruction", "SearchResult"]


class Engine:
    """A catalogue with its stores, models and search backends, loaded once.

    Args:
        catalog: A loaded :class:`Catalog`, or use :meth:`open`.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.items = catalog.ok.copy()  # the catalogue's cached frame stays as it is
        self.items["thumb_path"] = [str(p) for p in catalog.thumb_paths()]
        self.version = artifact_version(catalog)
        self._loader = Loader(catalog, self.items, threading.RLock())
        self.backend = self._loader.record
        self._query = QueryPipeline(self._loader)
        self._views = Views(self._loader, self._query.product_box)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Engine:
        """Opens the catalogue at ``path``; raises :class:`imgsim.ingest.catalog.CatalogError`."""
        return cls(Catalog.load(path))

    def close(self) -> None:
        """Closes the search backends' connections; safe to call twice (a later search reopens them)."""
        self._loader.close()

    # -- what is available -------------------------------------------------------------------

    def approaches(self) -> list[str]:
        """Approaches whose store is built and current for this catalogue, in display order."""
        return self._loader.approaches()

    def unavailable(self) -> dict[str, str]:
        """For each approach that cannot be used, why, in plain words."""
        return {a: self._loader.problem(a) for a in approaches_mod.APPROACHES
                if self._loader.store_or_none(a) is None}

    def label(self, approach: str) -> str:
        """The approach's display label, naming the model its store was built with."""
        store = self._loader.store_or_none(approach)
        return approaches_mod.get(approach).label(store.manifest if store else None)

    def categories(self) -> list[str]:
        """The catalogue's non-empty categories, sorted."""
        return sorted(c for c in self.items["category"].unique() if c)

    def columns(self) -> list[str]:
        """The columns a ``where`` condition may name, in table order."""
        return filterable_columns(self.items)

    def filter_choices(self) -> dict[str, tuple]:
        """What a filter form offers per column: ``("range", low, high)`` for numeric columns,
        ``("choices", value, ...)`` for text columns with a few values (see
        :func:`imgsim.index.conditions.column_choices`)."""
        return column_choices(self.items)

    def store(self, approach: str) -> Store:
        """The store of ``approach``; raises ``ValueError`` saying why it is unavailable."""
        return self._loader.store(approach)

    def index(self, approach: str, metric: str | None = None) -> SearchBackend:
        """The search backend of ``approach`` (opened once per metric; see :mod:`imgsim.index.factory`).

        Every backend answers ``search(queries, k, filter=...)`` and ``search_regions(...)`` with
        the same :class:`~imgsim.index.Hits`.
        """
        return self._loader.backend(approach, metric)

    def search_backend(self, approach: str) -> str:
        """How ``approach`` is searched, in words (the backend's ``describe()``)."""
        return self.index(approach).describe()

    def model(self, approach: str):
        """The model that embeds queries for ``approach``, loaded once and checked against its store.

        Raises:
            ValueError: The approach has no store.
            imgsim.storage.stores.StoreMismatchError: The model on disk is not the one the store was built with.
        """
        return self._loader.model(approach)

    def region_embedder(self, approach: str):
        """The :class:`imgsim.approaches.regions.RegionEmbedder` for ``approach``, or None where it has none."""
        return self._loader.region_embedder(approach)

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
        where: tuple[str | Condition, ...] = (),
        text: str | None = None,
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
            where: Conditions on any column of the items table, every result meets them:
                ``"colour=Blue"``, ``"price>=10"``, ``"price<=99"`` (or
                :class:`~imgsim.index.conditions.Condition` values); ``k`` come back whenever ``k``
                items pass (see :meth:`columns` for the columns).
            text: Words that re-rank what looks like the photo ("this, but in blue"; see
                :mod:`imgsim.text`): results then also carry ``photo_score`` and ``text_score``.

        Raises:
            imgsim.ingest.images.ImageDecodeError: The image cannot be decoded.
            ValueError: Bad ``k`` or ``box``, unknown approach or category, the approach is
                unavailable, or words with no letter or digit.
            imgsim.index.conditions.FilterError: A condition names a column the catalogue lacks
                (the message lists its columns) or a value the column cannot hold.
        """
        return self._query.search(image, approach, k, category=category, exclude_id=exclude_id,
                                  metric=metric, box=box, regions=regions, where=where, text=text)

    def search_item(self, row: int, approach: str = PRETRAINED, k: int = 10, *,
                    category: str | None = None, metric: str | None = None,
                    where: tuple[str | Condition, ...] = (), text: str | None = None) -> SearchResult:
        """"More like this": item ``row`` of the catalogue as the query, itself excluded (``where``
        and ``text`` as in :meth:`search`)."""
        return self._query.search_item(row, approach, k, category=category, metric=metric, where=where,
                                       text=text)

    def search_text(self, text: str, k: int = 10, *, category: str | None = None,
                    where: tuple[str | Condition, ...] = ()) -> SearchResult:
        """The ``k`` items whose words best match ``text`` (BM25 over name, category, label and
        every text column; see :mod:`imgsim.text`). Items matching no word are not returned.

        Raises:
            ValueError: ``k <= 0``, words with no letter or digit, or a bad filter (as :meth:`search`).
        """
        return self._query.search_text(text, k, category=category, where=where)

    def compare(self, image: ImageSource | np.ndarray, k: int = 10, *,
                approaches: list[str] | None = None, row: int | None = None,
                category: str | None = None, where: tuple[str | Condition, ...] = (),
                text: str | None = None) -> dict[str, SearchResult]:
        """The same query through several approaches (all available ones by default).

        Args:
            image: The query (ignored when ``row`` is given).
            k: Results per approach.
            approaches: Which approaches; default: every available one.
            row: Use catalogue item ``row`` as the query instead (itself excluded).
            category: Only items of this category.
            where: Conditions on any column (as in :meth:`search`).
            text: Words that re-rank each approach's results (as in :meth:`search`).
        """
        approaches = approaches or self.approaches()
        if row is not None:
            return {a: self.search_item(row, a, k, category=category, where=where, text=text)
                    for a in approaches}
        rgb = as_rgb(image, QUERY_MAX_SIDE)
        return {a: self.search(rgb, a, k, category=category, where=where, text=text) for a in approaches}

    # -- views and analytics (see imgsim.views) ---------------------------------------------------

    def reconstruct(self, image: ImageSource | np.ndarray | None = None, *,
                    row: int | None = None, box: tuple[int, int, int, int] | None = None) -> Reconstruction:
        """The autoencoder's reconstruction of ``image`` or of catalogue item ``row``.

        A photo is cropped to ``box``, else to its automatic product box (as a search does), so
        the reconstruction is the studio picture the autoencoder imagines for the product.
        """
        return self._views.reconstruct(image, row=row, box=box)

    def reconstruction_errors(self, batch_size: int = 64) -> pd.DataFrame:
        """Per-item reconstruction MSE and PSNR over the whole catalogue (computed once per engine).

        Returns:
            A frame with ``row``, ``id``, ``name``, ``category``, ``mse``, ``psnr``.
        """
        return self._views.reconstruction_errors(batch_size)

    def drift(self, retrain_ratio: float = 1.5, retrain_share: float = 0.2) -> list[Drift]:
        """How far the catalogue has moved from what its learned models were fitted on (see :meth:`Views.drift`).

        Returns:
            One :class:`~imgsim.approaches.base.Drift` per learned approach: a plain-words ``line``
            and whether retraining is advised.
        """
        return self._views.drift(retrain_ratio, retrain_share)

    def embedding_map(self, approach: str, limit: int = 3000, seed: int = 0) -> pd.DataFrame:
        """A 2-D PCA of up to ``limit`` items' embeddings, for a scatter plot.

        Returns:
            A frame with ``x``, ``y``, ``row`` and ``category`` (``(none)`` when empty).
        """
        return self._views.embedding_map(approach, limit, seed)

    def labels(self, label_column: str | None = None) -> np.ndarray:
        """The label of every item (``label`` column by default).

        Raises:
            ValueError: The catalogue has no such column.
        """
        return self._views.labels(label_column)

    def evaluate(self, label_column: str | None = None, k: int = 10, *,
                 approaches: list[str] | None = None, curve_k: int = 0) -> dict[str, Any]:
        """Leave-one-out retrieval quality of each approach, by ``label_column`` (see :meth:`Views.evaluate`).

        Returns:
            ``{"k", "label_column", "n", "chance", <approach>: {"precision@1", "precision@k",
            "map@k", ["curve"]}}``.
        """
        return self._views.evaluate(label_column, k, approaches=approaches, curve_k=curve_k)

    def strengths(self) -> dict[str, str]:
        """What each approach was measured to be good at on this catalogue, one plain sentence each
        (see :func:`imgsim.strengths.describe`)."""
        from imgsim.strengths import describe

        return describe(self)
