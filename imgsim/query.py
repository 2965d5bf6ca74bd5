"""The query pipeline: decode a photo, embed it (whole, boxed or by regions), search, make the frame.

The search itself is the approach's backend's (:class:`imgsim.index.SearchBackend`): this module
never knows whether exact search, a graph or a service answers. Words (:mod:`imgsim.text`) are
searched alone, or re-rank the photo's results; each photo result carries the part of the photo
that produced its score (``matched_box``).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from imgsim import approaches as approaches_mod
from imgsim import text as text_mod
from imgsim.index import Filter, Hits
from imgsim.ingest.images import (
    ImageDecodeError,
    ImageSource,
    clip_box,
    crop,
    decode_image,
    load_square,
    thumbnail,
    to_square,
)
from imgsim.loader import Loader

#: The name of the words-only answer (:meth:`QueryPipeline.search_text`), beside the approaches'.
WORDS = "words"

#: Largest side a query photo is decoded at: region search's 448 px pass (JPEG draft mode makes a
#: 12 MP photo cheap: 63 ms against 375 ms at 1024 in the phone-photo benchmark).
QUERY_MAX_SIDE = 448


@dataclasses.dataclass
class SearchResult:
    """The answer to one query.

    Attributes:
        approach: Which approach answered.
        items: One row per hit, best first: ``rank``, ``row``, ``score``, ``matched_box`` (the
            part of the query photo that produced the score, ``(x0, y0, x1, y1)`` in the decoded
            photo's pixels; None for a catalogue item or words alone), and the catalogue's
            columns (``id``, ``name``, ``category``, ``label``, ``thumb_path``, metadata). With
            words, also ``photo_score`` and ``text_score`` (BM25).
        query_image: The query as the model saw it, ``(S, S, 3)`` uint8 (None for words alone).
        metric: ``cosine`` (score: higher is closer), ``euclidean`` (score: a distance),
            ``bm25`` (words alone) or ``photo+words`` (the fused score, higher is closer).
        seconds: Wall time from the query as given to the results: decoding (when the query was
            bytes or a path), embedding and search.
        search_seconds: Wall time of the search step alone.
        label: The approach's display label, naming the model that answered.
        auto_box: With region search, the automatic product box found in the query's pixels.
        regions: How many query vectors were searched (1 without region search).
        no_good_match: True when the best result scores past the approach's calibrated line
            (:mod:`imgsim.calibration`): nothing like the photo is in the catalogue, and the
            results are only the closest items. None without a line (a tiny catalogue, one made
            for another model, another metric asked for), for a catalogue item or words alone.
        match_threshold: The line it was judged by (in ``metric``'s units), or None.
    """

    approach: str
    items: pd.DataFrame
    query_image: np.ndarray | None
    metric: str
    seconds: float
    search_seconds: float
    label: str = ""
    auto_box: tuple[int, int, int, int] | None = None
    regions: int = 1
    no_good_match: bool | None = None
    match_threshold: float | None = None

    @property
    def ids(self) -> list[str]:
        """Ids of the hits, best first."""
        return self.items["id"].tolist()

    def label_precision(self, label: str, column: str = "label") -> float:
        """The fraction of hits whose ``column`` equals ``label`` (0 when there are no hits)."""
        if self.items.empty or column not in self.items:
            return 0.0
        return float((self.items[column] == label).mean())


class QueryPhoto(np.ndarray):
    """A decoded query photo, ``(H, W, 3)`` uint8, that keeps the catalogue's thumbnail of the
    same bytes (``thumbnail``: JPEG, :func:`imgsim.ingest.images.thumbnail`).

    The whole-photo vector is made from that thumbnail, as the photo's own item was at import, so
    the same bytes score 1 against themselves; the regions and boxes use the array (448 px). A
    slice or copy is another picture and keeps no thumbnail (it is made again from its pixels).
    """

    thumbnail: bytes | None

    def __new__(cls, rgb: np.ndarray, jpeg: bytes | None) -> QueryPhoto:
        photo = np.asarray(rgb).view(cls)
        photo.thumbnail = jpeg
        return photo

    def __array_finalize__(self, obj: object) -> None:
        self.thumbnail = None


def as_rgb(image: ImageSource | np.ndarray, max_side: int = QUERY_MAX_SIDE) -> np.ndarray:
    """``image`` itself when already decoded, else the :class:`QueryPhoto` of it."""
    if isinstance(image, np.ndarray):
        return image
    rgb = decode_image(image, max_side=max_side)
    try:
        _, jpeg = thumbnail(image)  # the same bytes read again (a file object is rewound)
    except ImageDecodeError:  # a stream that cannot be read twice: made from the pixels instead
        jpeg = None
    return QueryPhoto(rgb, jpeg)


def decode_query(image: ImageSource) -> np.ndarray:
    """Decodes a query photo the way :meth:`imgsim.engine.Engine.search` does (longest side at most 448).

    Boxes given to ``search`` are in the pixels of this array (a :class:`QueryPhoto`).
    """
    return as_rgb(image, QUERY_MAX_SIDE)


def whole_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The whole photo as the ``(size, size, 3)`` square its catalogue item would be embedded from:
    its thumbnail (:func:`imgsim.ingest.images.thumbnail`) read back as stores read theirs."""
    jpeg = getattr(rgb, "thumbnail", None)
    return load_square(jpeg if jpeg is not None else thumbnail(rgb)[1], size)


class QueryPipeline:
    """Answers queries with what a :class:`~imgsim.loader.Loader` loads.

    Args:
        loader: The engine's loader (stores, models, backends, region embedders).
    """

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.items = loader.items
        self._last_regions: tuple | None = None
        self._text = text_mod.LazyTextIndex(loader.items)

    def search(self, image: ImageSource | np.ndarray, approach: str, k: int, *, category: str | None,
               exclude_id: str | None, metric: str | None, box: tuple[int, int, int, int] | None,
               regions: bool | None, where: tuple = (), text: str | None = None) -> SearchResult:
        """:meth:`imgsim.engine.Engine.search` (see there)."""
        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        model = self.loader.model(approach)
        search_filter = self._filter(category, exclude_id, where)  # a bad filter fails before any work
        started = time.perf_counter()
        rgb = as_rgb(image)
        whole = (0, 0, rgb.shape[1], rgb.shape[0])
        if box is not None:
            box = clip_box(box, rgb.shape[:2])
            rgb = crop(rgb, box)
        square = to_square(rgb, model.image_size) if box is not None else whole_square(rgb, model.image_size)
        embedder = self.loader.region_embedder(approach) if box is None and regions is not False else None
        if embedder is None:
            if regions and box is None:
                raise ValueError(f"region search is not available for {approach}: "
                                 f"{self.loader.no_regions[approach]}")
            product = self.product_box(rgb) if box is None and regions is not False else None
            if product is not None:  # the latent of a photo is mostly scene: search the product's box
                square = to_square(crop(rgb, product), model.image_size)
            vector = model.embed(square[None])[0]
            matched = np.asarray([box or product or whole], np.int64)
            return self._answer(approach, vector[None], square, k, search_filter, metric, started,
                                boxes=matched, text=text, judge=True)
        query = self.region_query(embedder, rgb)
        vectors = approaches_mod.get(approach).region_vectors(model, query.vectors)
        result = self._answer(approach, vectors, square, k, search_filter, metric, started,
                              regions=query.kinds, boxes=query.boxes, text=text, judge=True)
        result.auto_box = query.auto_box
        result.regions = len(vectors)
        return result

    def search_item(self, row: int, approach: str, k: int, *, category: str | None,
                    metric: str | None, where: tuple = (), text: str | None = None) -> SearchResult:
        """:meth:`imgsim.engine.Engine.search_item` (see there)."""
        if not 0 <= row < len(self.items):
            raise ValueError(f"`row` must be in [0, {len(self.items)}). Received: row={row}")
        started = time.perf_counter()
        store = self.loader.store(approach)
        vector = np.asarray(store.embeddings[row])
        square = self.loader.catalog.load_square(row, int(store.manifest["image_size"]))
        return self._answer(approach, vector[None], square, k, Filter(category, (row,), where), metric,
                            started, text=text)

    def search_text(self, text: str, k: int, *, category: str | None, where: tuple = ()) -> SearchResult:
        """:meth:`imgsim.engine.Engine.search_text` (see there)."""
        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        search_filter = self._filter(category, None, where)
        started = time.perf_counter()
        index = self._text.get()
        hits = index.search(text, k, search_filter.mask(self.items))
        seconds = time.perf_counter() - started
        return SearchResult(WORDS, self.hits_frame(hits), None, "bm25", seconds, seconds,
                            f"Words (BM25 over {', '.join(index.columns)})")

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
        if "whole_square" in query.kinds:  # the whole photo as its item was embedded: self-score 1
            vectors = query.vectors.copy()
            vectors[query.kinds.index("whole_square")] = embedder.embed_squares(
                whole_square(rgb, embedder.image_size)[None])[0]
            query = dataclasses.replace(query, vectors=vectors)
        self._last_regions = (rgb, embedder, query)
        return query

    def hits_frame(self, hits: Hits, boxes: np.ndarray | None = None) -> pd.DataFrame:
        """The first query's hits as rows of the items table, with ``rank``, ``row``, ``score`` and
        ``matched_box``.

        Args:
            hits: The hits.
            boxes: ``(R, 4)``: the box of each query vector (one for a single vector), or None.
        """
        rows, scores = hits.rows[0], hits.scores[0]
        frame = self.items.iloc[rows].copy()
        if boxes is None:
            matched = [None] * len(rows)
        else:
            winners = hits.regions[0] if hits.regions is not None else np.zeros(len(rows), np.int64)
            matched = [tuple(int(v) for v in boxes[w]) for w in winners]
        frame.insert(0, "matched_box", matched)
        frame.insert(0, "score", scores)
        frame.insert(0, "row", rows)
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        return frame.reset_index(drop=True)

    def _filter(self, category: str | None, exclude_id: str | None, where: tuple = ()) -> Filter:
        """The search filter: a category, conditions, and the row of ``exclude_id`` (an unknown id
        excludes nothing); checked against the items table here, so a bad one fails at once."""
        rows: tuple[int, ...] = ()
        if exclude_id is not None:
            matches = np.flatnonzero(self.items["id"].to_numpy() == exclude_id)
            rows = (int(matches[0]),) if len(matches) else ()
        search_filter = Filter(category, rows, tuple(where or ()))
        search_filter.mask(self.items)
        return search_filter

    def _answer(self, approach: str, vectors: np.ndarray, square: np.ndarray, k: int, search_filter: Filter,
                metric: str | None, started: float, regions: tuple[str, ...] | bool = False,
                boxes: np.ndarray | None = None, text: str | None = None, judge: bool = False) -> SearchResult:
        """Searches the approach's backend with one vector, or with region vectors (each item
        scored by its best region; ``regions`` is then True or the regions' kinds), re-ranks by
        ``text`` when given (:func:`imgsim.text.fuse`), and makes the result. With ``judge`` (a
        photo query), the best photo score is judged against the approach's no-good-match line."""
        backend = self.loader.backend(approach, metric)
        text_scores = self._text.get().scores(text) if text is not None else None
        t0 = time.perf_counter()
        pool = k if text is None else max(k, text_mod.POOL, text_mod.POOL_PER_K * k)
        if regions is False:
            hits = backend.search(vectors, pool, filter=search_filter)
        else:
            kinds = regions if isinstance(regions, tuple) else None
            hits = backend.search_regions(vectors, pool, filter=search_filter, kinds=kinds)
        line = self.loader.match_threshold(approach) if judge else None
        if line is not None and line.metric != backend.metric.value:
            line = None  # calibrated in the store's metric, not the one asked for
        best = float(hits.scores[0][0]) if line is not None and len(hits.scores[0]) else None
        if text_scores is not None:
            hits, photo_scores, word_scores = text_mod.fuse(
                hits, text_scores, k, higher_is_closer=backend.metric.value == "cosine")
        search_seconds = time.perf_counter() - t0
        store = self.loader.store(approach)
        frame = self.hits_frame(hits, boxes)
        if text_scores is not None:
            frame.insert(frame.columns.get_loc("score") + 1, "photo_score", photo_scores)
            frame.insert(frame.columns.get_loc("photo_score") + 1, "text_score", word_scores)
        return SearchResult(approach, frame, square, "photo+words" if text is not None else backend.metric.value,
                            time.perf_counter() - started, search_seconds,
                            approaches_mod.get(approach).label(store.manifest),
                            no_good_match=line.flags(best) if best is not None else None,
                            match_threshold=line.score if best is not None else None)

