"""The query pipeline: decode a photo, embed it (whole, boxed or by regions), search, make the frame.

The search itself is the approach's backend's (:class:`imgsim.index.SearchBackend`): this module
never knows whether exact search, a graph or a service answers.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from imgsim import approaches as approaches_mod
from imgsim.index import Filter, Hits
from imgsim.ingest.images import ImageSource, crop, decode_image, to_square
from imgsim.loader import Loader

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


def as_rgb(image: ImageSource | np.ndarray, max_side: int = QUERY_MAX_SIDE) -> np.ndarray:
    """``image`` itself when already decoded, else :func:`decode_image` of it."""
    return image if isinstance(image, np.ndarray) else decode_image(image, max_side=max_side)


def decode_query(image: ImageSource) -> np.ndarray:
    """Decodes a query photo the way :meth:`imgsim.engine.Engine.search` does (longest side at most 448).

    Boxes given to ``search`` are in the pixels of this array.
    """
    return decode_image(image, max_side=QUERY_MAX_SIDE)


class QueryPipeline:
    """Answers queries with what a :class:`~imgsim.loader.Loader` loads.

    Args:
        loader: The engine's loader (stores, models, backends, region embedders).
    """

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.items = loader.items
        self._last_regions: tuple | None = None

    def search(self, image: ImageSource | np.ndarray, approach: str, k: int, *, category: str | None,
               exclude_id: str | None, metric: str | None, box: tuple[int, int, int, int] | None,
               regions: bool | None) -> SearchResult:
        """:meth:`imgsim.engine.Engine.search` (see there)."""
        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        model = self.loader.model(approach)
        started = time.perf_counter()
        rgb = as_rgb(image)
        if box is not None:
            rgb = crop(rgb, box)
        square = to_square(rgb, model.image_size)
        embedder = self.loader.region_embedder(approach) if box is None and regions is not False else None
        search_filter = self._filter(category, exclude_id)
        if embedder is None:
            if regions and box is None:
                raise ValueError(f"region search is not available for {approach}: "
                                 f"{self.loader.no_regions[approach]}")
            product = self.product_box(rgb) if box is None and regions is not False else None
            if product is not None:  # the latent of a photo is mostly scene: search the product's box
                square = to_square(crop(rgb, product), model.image_size)
            vector = model.embed(square[None])[0]
            return self._answer(approach, vector[None], square, k, search_filter, metric, started)
        query = self.region_query(embedder, rgb)
        vectors = approaches_mod.get(approach).region_vectors(model, query.vectors)
        result = self._answer(approach, vectors, square, k, search_filter, metric, started,
                              regions=query.kinds)
        result.auto_box = query.auto_box
        result.regions = len(vectors)
        return result

    def search_item(self, row: int, approach: str, k: int, *, category: str | None,
                    metric: str | None) -> SearchResult:
        """:meth:`imgsim.engine.Engine.search_item` (see there)."""
        if not 0 <= row < len(self.items):
            raise ValueError(f"`row` must be in [0, {len(self.items)}). Received: row={row}")
        started = time.perf_counter()
        store = self.loader.store(approach)
        vector = np.asarray(store.embeddings[row])
        square = self.loader.catalog.load_square(row, int(store.manifest["image_size"]))
        return self._answer(approach, vector[None], square, k, Filter(category, (row,)), metric, started)

    def product_box(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The automatic product box of a photo (None for a studio shot, or without CNN features).

        Approaches whose vectors cannot be pooled over regions (the autoencoder's latent) search
        with this crop of a photo: on simulated phone photos it finds the product in the top 10
        six times as often as the whole photo (``benchmarks/autoencoder.py --phone``).
        """
        embedder = next((e for a in self.loader.approaches() if (e := self.loader.region_embedder(a)) is not None),
                        None)
        return self.region_query(embedder, rgb).auto_box if embedder is not None else None

    def region_query(self, embedder, rgb: np.ndarray):
        """``embedder.embed(rgb)``, remembered for the same array: one photo searched by every
        approach (Compare) is embedded once, not once per approach."""
        cached = self._last_regions
        if cached is not None and cached[0] is rgb and cached[1] is embedder:
            return cached[2]
        query = embedder.embed(rgb)
        self._last_regions = (rgb, embedder, query)
        return query

    def hits_frame(self, hits: Hits) -> pd.DataFrame:
        """The first query's hits as rows of the items table, with ``rank``, ``row`` and ``score``."""
        rows, scores = hits.rows[0], hits.scores[0]
        frame = self.items.iloc[rows].copy()
        frame.insert(0, "score", scores)
        frame.insert(0, "row", rows)
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        return frame.reset_index(drop=True)

    def _filter(self, category: str | None, exclude_id: str | None) -> Filter:
        """The search filter: a category, and the row of ``exclude_id`` (an unknown id excludes nothing)."""
        if exclude_id is None:
            return Filter(category)
        matches = np.flatnonzero(self.items["id"].to_numpy() == exclude_id)
        return Filter(category, (int(matches[0]),) if len(matches) else ())

    def _answer(self, approach: str, vectors: np.ndarray, square: np.ndarray, k: int, search_filter: Filter,
                metric: str | None, started: float, regions: tuple[str, ...] | bool = False) -> SearchResult:
        """Searches the approach's backend with one vector, or with region vectors (each item
        scored by its best region; ``regions`` is then True or the regions' kinds), and makes the result."""
        backend = self.loader.backend(approach, metric)
        t0 = time.perf_counter()
        if regions is False:
            hits = backend.search(vectors, k, filter=search_filter)
        else:
            kinds = regions if isinstance(regions, tuple) else None
            hits = backend.search_regions(vectors, k, filter=search_filter, kinds=kinds)
        search_seconds = time.perf_counter() - t0
        store = self.loader.store(approach)
        return SearchResult(approach, self.hits_frame(hits), square, backend.metric.value,
                            time.perf_counter() - started, search_seconds,
                            approaches_mod.get(approach).label(store.manifest))

