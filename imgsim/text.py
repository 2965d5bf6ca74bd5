"""Words: BM25 over the catalogue's own text, alone or fused with a photo's results.

No model reads the words (no CLIP-class weights install from a package registry): the
catalogue's columns do. Each item's document is its name, category, label and every other text
column of the items table (colour, gender, usage, a product name from a CSV, ...); ranking is
BM25 (``bm25s``: sparse matrices over numpy and scipy). Words are lower-cased, split on anything
but letters and digits, and a final plural ``s`` is dropped (``Tshirts`` and ``tshirt`` meet).

The index is built lazily from the items table on the first words query and kept for the life
of the engine; an engine is opened per catalogue version, so an ``add`` or ``remove`` (a new
version) gets a new one. At these sizes that is cheap (tens of milliseconds for 10,000 items).

**Photo + words** (:func:`fuse`): the photo's top ``pool`` results (filters applied) are
re-ranked by a weighted sum of the photo score and the BM25 score, each min-max normalised over
the pool; a photo of a grey T-shirt plus "blue" gives the blue T-shirts among what looks like it.
"""

from __future__ import annotations

import re
import threading

import numpy as np
import pandas as pd

from imgsim.errors import ImgsimError
from imgsim.index import Hits
from imgsim.index.conditions import INTERNAL_COLUMNS

#: The photo's results the words re-rank (at least; ``POOL_PER_K * k`` for a large ``k``).
POOL = 100
POOL_PER_K = 10
#: The words' share of a fused score (the photo has the rest): above one half, so within the pool an
#: item that matches the words outranks one that matches none ("this, but in blue"). Measured on
#: ``benchmarks/multisearch.py`` (1,528 myntra items, precision@3 of the photo's type in the asked
#: colour): 0.085 for the photo alone, 0.553 / 0.558 / 0.570 / 0.577 / 0.548 / 0.460 at 0.5 / 0.6 /
#: 0.7 / 0.8 / 0.9 / 1.0, 0.102 for the colour word alone.
TEXT_WEIGHT = 0.8

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset("a an and for in of on or the to with".split())


def words(text: str) -> list[str]:
    """The terms of ``text`` as the index sees them: lower case, plural ``s`` dropped, no stop words."""
    terms = []
    for word in _WORD.findall(str(text).lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        terms.append(word)
    return terms


def check_words(text: str) -> list[str]:
    """The terms of ``text`` (:func:`words`).

    Raises:
        ValueError: ``text`` holds no word (letters or digits).
    """
    terms = words(text)
    if not terms:
        raise ValueError(f"the words must hold at least one letter or digit. Received: {text!r}")
    return terms


def text_columns(items: pd.DataFrame) -> list[str]:
    """The columns whose words describe an item: name, category, label and every other text column."""
    first = [c for c in ("name", "category", "label") if c in items]
    rest = [str(c) for c in items.columns
            if str(c) not in INTERNAL_COLUMNS and str(c) not in first and str(c) != "id"
            and (pd.api.types.is_object_dtype(items[c]) or pd.api.types.is_string_dtype(items[c]))]
    return first + rest


class WordsUnavailableError(ImgsimError, RuntimeError):
    """Words cannot be searched here (the BM25 library is missing)."""


class TextIndex:
    """BM25 over the words of each row of an items table (row ``i`` = item ``i``).

    Args:
        items: The catalogue's items, row-aligned with its stores.

    Raises:
        WordsUnavailableError: ``bm25s`` is not installed.
    """

    def __init__(self, items: pd.DataFrame) -> None:
        try:
            import bm25s  # imported here: only words queries need it
        except ImportError as err:
            raise WordsUnavailableError("searching words needs the bm25s package, which is not installed "
                                        "on this server") from err

        self.columns = text_columns(items)
        documents = [[] for _ in range(len(items))]
        for column in self.columns:
            for i, value in enumerate(items[column].tolist()):
                if isinstance(value, str) and value:
                    documents[i].extend(words(value))
        self._vocabulary = {w for doc in documents for w in doc}
        self._bm25 = bm25s.BM25()
        if len(items):
            self._bm25.index(documents, show_progress=False)
        self.size = len(items)

    def scores(self, text: str) -> np.ndarray:
        """``(N,)`` float32 BM25 score of every row for ``text`` (0 where no word matches).

        Raises:
            ValueError: ``text`` holds no word (letters or digits).
        """
        terms = check_words(text)
        known = [t for t in terms if t in self._vocabulary]
        if not known or self.size == 0:
            return np.zeros(self.size, np.float32)
        return np.asarray(self._bm25.get_scores(known), np.float32)

    def search(self, text: str, k: int, mask: np.ndarray | None = None) -> Hits:
        """The ``k`` rows whose words best match ``text`` (rows matching no word are left out).

        Args:
            text: The words.
            k: How many rows at most.
            mask: Optional ``(N,)`` bool: only rows where it is True (a filter's mask).

        Returns:
            :class:`Hits` with one row, BM25 scores best first, ties to the lower row.
        """
        score = self.scores(text)
        eligible = score > 0 if mask is None else (score > 0) & mask
        rows = np.flatnonzero(eligible)
        rows = rows[np.lexsort((rows, -score[rows]))][:k]
        return Hits(rows[None].astype(np.int64), score[rows][None].astype(np.float32))


def _unit_range(values: np.ndarray) -> np.ndarray:
    """``values`` min-max scaled to [0, 1] (all equal: all 1 when positive, else 0)."""
    low, high = float(values.min()), float(values.max())
    if high > low:
        return (values - low) / (high - low)
    return np.full_like(values, 1.0 if high > 0 else 0.0)


def fuse(photo: Hits, text_scores: np.ndarray, k: int, *, higher_is_closer: bool = True,
         weight: float = TEXT_WEIGHT) -> tuple[Hits, np.ndarray, np.ndarray]:
    """The photo's pool re-ranked by photo and words together.

    Args:
        photo: One query's hits, the pool (best first).
        text_scores: ``(N,)`` BM25 scores of every row.
        k: How many to keep.
        higher_is_closer: False for euclidean distances.
        weight: The words' share of the fused score, in [0, 1].

    Returns:
        ``(hits, photo_scores, text_scores)``: the top ``k`` by fused score (ties to the photo's
        order) and, for those rows, the photo's own score and the BM25 score.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"`weight` must be in [0, 1]. Received: weight={weight}")
    rows, scores = photo.rows[0], photo.scores[0].astype(np.float64)
    if len(rows) == 0:
        return photo, scores.astype(np.float32), scores.astype(np.float32)
    closeness = scores if higher_is_closer else -scores
    text = text_scores[rows].astype(np.float64)
    fused = (1.0 - weight) * _unit_range(closeness) + weight * _unit_range(text)
    order = np.lexsort((np.arange(len(rows)), -fused))[:k]
    regions = None if photo.regions is None else photo.regions[:, order]
    hits = Hits(rows[order][None], fused[order][None].astype(np.float32), regions)
    return hits, scores[order].astype(np.float32), text[order].astype(np.float32)


class LazyTextIndex:
    """A :class:`TextIndex` built on first use, once, however many threads ask."""

    def __init__(self, items: pd.DataFrame) -> None:
        self._items = items
        self._index: TextIndex | None = None
        self._lock = threading.Lock()

    def get(self) -> TextIndex:
        """The index (built now on the first call)."""
        with self._lock:
            if self._index is None:
                self._index = TextIndex(self._items)
            return self._index
