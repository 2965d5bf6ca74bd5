"""Exact k-nearest-neighbour search over an embedding matrix.

Cosine similarity (the default) or euclidean distance, batched queries, an optional mask (a
category filter) and per-query exclusions (an item left out of its own results). Top-k uses
``argpartition`` and then sorts only the k winners; ties are broken by the lower row index, so
results are deterministic and equal to a full stable ``argsort``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from imgsim.index.backend import NO_FILTER, Filter, Hits, Metric, Opening, SearchBackend, check_k

__all__ = ["ExactBackend", "Hits", "Index", "Metric"]


def _top_k_row(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of ``score``, ties to the lower index, best first."""
    n = score.shape[0]
    if k >= n:
        candidates = np.arange(n)
    else:
        part = np.argpartition(-score, k - 1)[:k]
        kth = score[part].min()
        strict = np.flatnonzero(score > kth)
        equal = np.flatnonzero(score == kth)[: k - len(strict)]
        candidates = np.concatenate([strict, equal])
    order = np.lexsort((candidates, -score[candidates]))
    return candidates[order]


class Index:
    """An in-memory exact index over an ``(N, dim)`` embedding matrix.

    Args:
        embeddings: ``(N, dim)`` float array (a memory-mapped store works).
        metric: ``cosine`` or ``euclidean``.
    """

    def __init__(self, embeddings: np.ndarray, metric: Metric | str = Metric.COSINE) -> None:
        if not (isinstance(embeddings, np.ndarray) and embeddings.dtype == np.float32):
            embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ValueError(f"`embeddings` must be 2-D (N, dim). Received shape: {embeddings.shape}")
        self.metric = Metric(metric)
        if self.metric is Metric.COSINE:
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            # Unit rows (the pretrained stores) are used as they are: a memory map stays one.
            unit = np.allclose(norms, 1.0, atol=1e-4)
            self._matrix = embeddings if unit else embeddings / np.maximum(norms, 1e-12)
        else:
            self._matrix = embeddings
            self._sq_norms = np.einsum("ij,ij->i", embeddings, embeddings)

    @property
    def size(self) -> int:
        """Number of rows."""
        return self._matrix.shape[0]

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._matrix.shape[1]

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """``(Q, N)`` closeness, higher is closer: cosine, or minus squared euclidean distance."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(
                f"queries must have dim {self.dim} like the index. Received shape: {q.shape}"
            )
        if self.metric is Metric.COSINE:
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            return q @ self._matrix.T
        q_sq = np.einsum("ij,ij->i", q, q)[:, None]
        return -(self._sq_norms[None, :] - 2.0 * (q @ self._matrix.T) + q_sq)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        mask: np.ndarray | None = None,
        exclude: np.ndarray | list[int] | None = None,
    ) -> Hits:
        """The ``k`` closest rows to each query.

        Args:
            queries: ``(Q, dim)`` or ``(dim,)``.
            k: How many results per query; fewer come back when fewer rows are eligible.
            mask: Optional ``(N,)`` bool: only rows where it is True are eligible.
            exclude: Optional ``(Q,)`` row per query to leave out (``-1`` for none), e.g. the
                query's own row.

        Returns:
            :class:`Hits` with ``min(k, eligible rows)`` columns.

        Raises:
            ValueError: ``k <= 0``, or shapes that do not match the index.
        """
        check_k(k)
        return self._select(self.scores(queries), k, mask, exclude)

    def search_fused(self, vectors: np.ndarray, k: int, *, mask: np.ndarray | None = None,
                     exclude: np.ndarray | list[int] | None = None) -> Hits:
        """The ``k`` rows whose best match among ``vectors`` is closest, in one product (max fusion).

        Args:
            vectors: ``(R, dim)``: one query made of ``R`` vectors (the regions of a photo).
            k: How many rows.
            mask: As in :meth:`search`.
            exclude: One row to leave out (``[row]``), or None.

        Returns:
            :class:`Hits` with one row: each row's best score (cosine, or euclidean distance) and
            the region that gave it.
        """
        check_k(k)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if len(vectors) == 0:
            raise ValueError(f"`vectors` must hold at least one region. Received shape: {vectors.shape}")
        scores = self.scores(vectors)
        winner = scores.argmax(axis=0)  # the first region on a tie, as merge_region_hits
        hits = self._select(scores.max(axis=0, keepdims=True), k, mask, exclude)
        return Hits(hits.rows, hits.scores, winner[hits.rows])

    def _select(self, score: np.ndarray, k: int, mask: np.ndarray | None,
                exclude: np.ndarray | list[int] | None) -> Hits:
        """Top ``k`` of each row of ``(Q, N)`` closeness (higher is closer), filters applied."""
        n_queries = score.shape[0]
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.size,):
                raise ValueError(f"`mask` must have shape ({self.size},). Received: {mask.shape}")
            score[:, ~mask] = -np.inf
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
            if exclude.shape != (n_queries,):
                raise ValueError(
                    f"`exclude` needs one row per query ({n_queries}). Received: {exclude.shape}"
                )
            valid = exclude >= 0
            score[np.flatnonzero(valid), exclude[valid]] = -np.inf
        eligible = np.isfinite(score).sum(axis=1).min() if self.size else 0
        k_eff = int(min(k, eligible))
        rows = np.empty((n_queries, k_eff), dtype=np.int64)
        for i in range(n_queries):
            rows[i] = _top_k_row(score[i], k_eff) if k_eff else rows[i]
        best = np.take_along_axis(score, rows, axis=1).astype(np.float32)
        if self.metric is Metric.EUCLIDEAN:
            best = np.sqrt(np.maximum(-best, 0.0))
        return Hits(rows, best)


class ExactBackend(SearchBackend):
    """Exact search as a :class:`~imgsim.index.backend.SearchBackend`: every row, every query.

    Region queries are scored in one product (:meth:`Index.search_fused`).

    Args:
        embeddings: ``(N, dim)`` float array (a memory-mapped store works).
        items: The catalogue's items, row-aligned with ``embeddings`` (for filters).
        metric: ``cosine`` or ``euclidean``.
    """

    def __init__(self, embeddings: np.ndarray, items: pd.DataFrame, metric: Metric | str = Metric.COSINE) -> None:
        if len(items) != len(embeddings):
            raise ValueError(f"`items` must have one row per embedding ({len(embeddings)}). "
                             f"Received: {len(items)} rows")
        self.index = Index(embeddings, metric)
        self.metric = self.index.metric
        self.items = items

    @property
    def size(self) -> int:
        """Number of rows."""
        return self.index.size

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """``(Q, N)`` closeness, higher is closer (see :meth:`Index.scores`)."""
        return self.index.scores(queries)

    def search(self, queries: np.ndarray, k: int, *, filter: Filter = NO_FILTER) -> Hits:
        """The ``k`` closest rows to each query (see :meth:`SearchBackend.search`)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        mask, exclude = filter.row_arguments(self.items, len(queries))
        return self.index.search(queries, k, mask=mask, exclude=exclude)

    def search_regions(self, vectors: np.ndarray, k: int, *, filter: Filter = NO_FILTER,
                       kinds: tuple[str, ...] | None = None) -> Hits:
        """Each row scored by its best region, all regions in one product."""
        mask, exclude = filter.row_arguments(self.items, 1)
        return self.index.search_fused(vectors, k, mask=mask, exclude=exclude)

    def describe(self) -> str:
        """``exact``."""
        return "exact"


def open_backend(opening: Opening) -> ExactBackend:
    """Exact search over the store: the backend that always answers (the factory's last resort)."""
    return ExactBackend(opening.store.embeddings, opening.items, opening.metric)
