"""What every "k nearest rows" answer shares: the metric, the hits, the filter and the protocol.

A backend answers for one store (one approach's ``(N, dim)`` embeddings, row ``i`` = item ``i``
of the catalogue). Exact search, the HNSW graph and Milvus all implement :class:`SearchBackend`
and return the same :class:`Hits`, so the engine never knows which one it has.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from imgsim.errors import ImgsimError
from imgsim.index.conditions import Condition, conditions_mask

if TYPE_CHECKING:
    from imgsim.ingest.catalog import Catalog
    from imgsim.storage.stores import Store


class Metric(enum.StrEnum):
    """How closeness is measured."""

    COSINE = "cosine"
    EUCLIDEAN = "euclidean"


@dataclasses.dataclass(frozen=True)
class Hits:
    """Results of a batch of queries.

    Attributes:
        rows: ``(Q, k)`` int64 row indices, best first.
        scores: ``(Q, k)`` float32: cosine similarity (higher is closer) or euclidean distance
            (lower is closer), by the index's metric.
        regions: For a region query, ``(1, k)`` int64: which of the query's vectors gave each
            row its score (the first on a tie); None otherwise.
    """

    rows: np.ndarray
    scores: np.ndarray
    regions: np.ndarray | None = None


class BackendError(ImgsimError, RuntimeError):
    """A search backend cannot answer (a missing collection, a service that refuses)."""


class StaleBackendError(BackendError):
    """A backend holds an earlier state of its catalogue; a refresh brings it up to date."""


@dataclasses.dataclass(frozen=True)
class Filter:
    """Which rows a search may return; the same value is pushed into every backend.

    Conditions on the catalogue's columns (``category``, and :class:`~imgsim.index.conditions.Condition`
    values on any column) become a row mask for exact and HNSW search (so ``k`` results come back
    whenever ``k`` rows pass) and an escaped expression for Milvus.

    Attributes:
        category: Only rows of this category (``None`` or ``""``: any).
        exclude_rows: Rows left out of every query's results (a catalogue item used as the query).
        where: Conditions every returned row meets (``COLUMN=VALUE``, ``COLUMN>=N``, ``COLUMN<=N``);
            text is parsed with :meth:`Condition.parse`.
    """

    category: str | None = None
    exclude_rows: tuple[int, ...] = ()
    where: tuple[Condition, ...] = ()

    def __post_init__(self) -> None:
        if self.category is not None and not isinstance(self.category, str):
            raise ValueError(f"`category` must be a string or None. Received: category={self.category!r}")
        if self.category == "":
            object.__setattr__(self, "category", None)
        rows = tuple(int(r) for r in self.exclude_rows)
        if any(r < 0 for r in rows):
            raise ValueError(f"`exclude_rows` must be rows >= 0. Received: exclude_rows={self.exclude_rows!r}")
        object.__setattr__(self, "exclude_rows", rows)
        if isinstance(self.where, (str, Condition)):
            raise ValueError(f"`where` must be a sequence of conditions. Received: where={self.where!r}")
        where = tuple(c if isinstance(c, Condition) else Condition.parse(c) for c in self.where)
        object.__setattr__(self, "where", where)

    @property
    def conditions(self) -> bool:
        """Whether any condition on the columns is set (exclusions aside)."""
        return self.category is not None or bool(self.where)

    def mask(self, items: pd.DataFrame) -> np.ndarray | None:
        """``(N,)`` bool: the rows of ``items`` that meet the conditions (None: every row).

        Exclusions are not in it (see :meth:`row_arguments`).

        Raises:
            ValueError: No item has the category (an unknown category is an error, not an
                empty answer).
            FilterError: A condition names an unknown column or a value it cannot hold.
        """
        mask = conditions_mask(self.where, items)
        if self.category is None:
            return mask
        category = (items["category"] == self.category).to_numpy()
        if not category.any():
            raise ValueError(f"no item has category {self.category!r}")
        return category if mask is None else category & mask

    def row_arguments(self, items: pd.DataFrame, n_queries: int) -> tuple[np.ndarray | None, list[int] | None]:
        """The filter as the ``mask`` and ``exclude`` arguments of an in-memory index's search.

        One excluded row goes in ``exclude`` (one row per query: cheap); several are folded into
        the mask.

        Returns:
            ``(mask or None, exclude or None)``.
        """
        mask = self.mask(items)
        rows = [r for r in self.exclude_rows if r < len(items)]  # a row past the end excludes nothing
        if len(rows) == 1 and mask is None:
            return None, rows * n_queries
        if rows:
            mask = np.ones(len(items), dtype=bool) if mask is None else mask.copy()
            mask[rows] = False
        return mask, None


NO_FILTER = Filter()


def merge_region_hits(hits: Hits, k: int, metric: Metric) -> Hits:
    """Per-region top-``k`` lists merged into one: each row scored by its best region.

    This gives the same top ``k`` as scoring every row by its best region exactly (max fusion):
    a row in the overall top ``k`` is in its best region's top ``k``. Ties go to the lower row.

    Args:
        hits: ``(R, k)`` hits of ``R`` region vectors.
        k: How many rows to keep.
        metric: Cosine (higher is closer) or euclidean (lower is closer).

    Returns:
        :class:`Hits` with one row of at most ``k`` columns, and the winning region of each.
    """
    sign = -1.0 if Metric(metric) is Metric.COSINE else 1.0
    best: dict[int, tuple[float, int]] = {}
    for region, (row_list, score_list) in enumerate(zip(hits.rows.tolist(), hits.scores.tolist())):
        for row, score in zip(row_list, score_list):
            if row not in best or sign * score < sign * best[row][0]:
                best[row] = (score, region)
    order = sorted(best.items(), key=lambda rs: (sign * rs[1][0], rs[0]))[:k]
    rows = np.array([[r for r, _ in order]], dtype=np.int64).reshape(1, -1)
    return Hits(rows, np.array([[s for _, (s, _) in order]], dtype=np.float32).reshape(1, -1),
                np.array([[g for _, (_, g) in order]], dtype=np.int64).reshape(1, -1))


def check_k(k: int) -> None:
    """Raises ``ValueError`` unless ``k >= 1``."""
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"`k` must be >= 1. Received: k={k}")


class SearchBackend(abc.ABC):
    """The ``k`` nearest rows of one store, however they are found.

    Attributes:
        metric: The store's metric; scores are cosine similarities or euclidean distances.
    """

    metric: Metric

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int, *, filter: Filter = NO_FILTER) -> Hits:
        """The ``k`` closest rows to each query.

        Args:
            queries: ``(Q, dim)`` float32 (or ``(dim,)`` for one).
            k: How many per query; fewer when fewer rows pass the filter.
            filter: Which rows may be returned.

        Returns:
            :class:`Hits` of ``Q`` rows.

        Raises:
            ValueError: ``k <= 0``, a wrong dim, or an unknown category.
            BackendError: The backend cannot answer.
        """

    def search_regions(self, vectors: np.ndarray, k: int, *, filter: Filter = NO_FILTER,
                       kinds: tuple[str, ...] | None = None) -> Hits:
        """The ``k`` rows whose best region is closest (one query of ``R`` region vectors).

        The default asks :meth:`search` for each region's top ``k`` and merges them by best
        score (:func:`merge_region_hits`), which equals exact max fusion.

        Args:
            vectors: ``(R, dim)`` region vectors.
            k: How many rows.
            filter: Which rows may be returned.
            kinds: The regions' kinds (as :class:`imgsim.approaches.regions.RegionQuery` names
                them); max fusion does not need them.

        Returns:
            :class:`Hits` with one row.
        """
        check_k(k)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if len(vectors) == 0:
            raise ValueError(f"`vectors` must hold at least one region. Received shape: {vectors.shape}")
        return merge_region_hits(self.search(vectors, k, filter=filter), k, self.metric)

    @abc.abstractmethod
    def describe(self) -> str:
        """How this backend searches, in words: ``exact``, ``approximate (HNSW)``, ``milvus (URI)``."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Releases connections or servers; safe to call twice. Nothing to release by default."""


@dataclasses.dataclass(frozen=True)
class Opening:
    """What a backend's opener is given to open a backend for one approach's store.

    Attributes:
        catalog: The catalogue.
        approach: The approach whose store is searched.
        store: That store (``store.embeddings`` is row-aligned with ``items``).
        items: The catalogue's items, for filters and for mapping ids to rows.
        metric: The metric asked for (the store's own unless overridden).
        record: The catalogue's ``backend.json`` (see :func:`imgsim.index.factory.read_backend`).
        model_spec: Returns the identity of the model that embeds queries (for backends that
            must refuse vectors made by another model); called only by those.
    """

    catalog: Catalog
    approach: str
    store: Store
    items: pd.DataFrame
    metric: Metric
    record: dict[str, Any]
    model_spec: Callable[[], dict[str, Any]]

    @property
    def store_metric(self) -> Metric:
        """The metric the store was built for."""
        return Metric(self.store.manifest.get("metric", "cosine"))

    @property
    def served_remotely(self) -> bool:
        """Whether ``backend.json`` names a service that holds this approach's vectors."""
        return self.record.get("kind", "local") != "local" and self.approach in self.record.get("approaches", [])
