"""Approximate nearest-neighbour search: an HNSW graph (FAISS) beside a store's exact matrix.

Exact search (:mod:`imgsim.index.exact`) reads every row for every query: about 200 ms a query at
1M x 1280 on two cores. An HNSW graph visits a few thousand rows instead. At 1280 dims the
graph can link 128-d PCA projections (``AnnConfig.graph_dims``), ten times cheaper to build, with
each query's candidates re-ranked on the stored (float16) vectors. :class:`AnnIndex` has
the same ``search`` signature and returns the same :class:`~imgsim.index.exact.Hits` (rows are row
numbers of the store's embeddings), so the engine can use either.

Correctness guarantees the graph alone does not give:

- Filters (``mask``) are applied inside the graph walk (a FAISS ``IDSelectorBitmap``); when few
  rows are eligible (``exact_below``) the eligible rows are searched exactly instead, and a query
  the graph answers with fewer than ``k`` rows is retried with a wider beam and then exactly. A
  search never returns fewer columns than :class:`imgsim.index.exact.Index` would.
- ``exclude`` (one row per query) is fetched one deeper and dropped, never lost.
- :meth:`AnnIndex.add` appends rows; :meth:`AnnIndex.remove` deletes rows with the same
  renumbering as ``np.delete(embeddings, rows, axis=0)``. FAISS cannot delete from an HNSW graph,
  so removed rows stay in the graph as tombstones that searches skip; :attr:`AnnIndex.tombstones`
  tells when a rebuild would pay off.

On disk: see :mod:`imgsim.index.hnsw_files`. :class:`HnswBackend` is the index as a search backend.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgsim.index import hnsw_files
from imgsim.index.backend import NO_FILTER, Filter, Hits, Metric, Opening, SearchBackend
from imgsim.index.hnsw_config import (  # noqa: F401 (re-exported: the HNSW settings and fingerprints)
    AnnConfig,
    AnnDtype,
    embeddings_fingerprint,
    faiss_storage,
    fingerprint_of,
    flat_index,
    row_digests,
    set_threads,
    should_use_ann,
    usable_cores,
)
from imgsim.index.hnsw_files import FORMAT_VERSION, KIND, LIBRARY, AnnMismatchError  # noqa: F401 (re-exported)
from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactError

# Rows handed to FAISS per call, so a float16 or memory-mapped matrix is never copied whole.
_CHUNK = 32_768
# A query the graph leaves short is retried with its beam this many times wider, this often.
_WIDEN = 4
_RETRIES = 3
# The widest beam a filtered search starts with (a 1% filter at ef 64 would ask for 6,400).
_MAX_EF = 2_048


class AnnIndex:
    """An HNSW index over a store's rows, searched like :class:`imgsim.index.exact.Index`.

    Build with :meth:`build` or :meth:`load`, not the constructor.
    """

    def __init__(self, index: Any, metric: Metric, config: AnnConfig, rows_of: np.ndarray,
                 digests: np.ndarray, vectors: Any = None, projection: np.ndarray | None = None,
                 build_id: str | None = None) -> None:
        self._index = index  # the HNSW graph
        # Names this graph from its build on: kept across in-place updates, new at each rebuild.
        self.build_id = build_id or uuid.uuid4().hex
        # The stored vectors (for re-ranking and exact search): the graph's own, or a separate
        # flat index when the graph links projections.
        self._vectors = vectors if vectors is not None else index
        self._projection = projection  # (dim, graph_dims) float32, or None
        self.metric = metric
        self.config = config
        # Graph node -> store row (-1: removed) and store row -> graph node.
        self._rows_of = rows_of
        self._node_of = np.full(len(digests), -1, dtype=np.int64)
        live = np.flatnonzero(rows_of >= 0)
        self._node_of[rows_of[live]] = live
        self._digests = digests
        self._live: np.ndarray | None = None  # bool over nodes, cached between removals

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, embeddings: np.ndarray, metric: Metric | str = Metric.COSINE,
              config: AnnConfig | None = None) -> AnnIndex:
        """Builds the graph over every row of ``embeddings``.

        Args:
            embeddings: ``(N, dim)`` float array (memory-mapped or float16 work; rows are read in
                chunks). For cosine, rows are normalised before they are stored.
            metric: ``cosine`` or ``euclidean``.
            config: Build and search parameters; the defaults when omitted.

        Returns:
            The index; row ``i`` is row ``i`` of ``embeddings``.

        Raises:
            ValueError: Not a 2-D matrix, or no rows.
        """
        import faiss

        config = config or AnnConfig()
        metric = Metric(metric)
        if not isinstance(embeddings, np.ndarray):
            embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
            raise ValueError(f"`embeddings` must be a non-empty 2-D (N, dim) matrix. "
                             f"Received shape: {embeddings.shape}")
        set_threads(config.threads)
        dim = int(embeddings.shape[1])
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric is Metric.COSINE else faiss.METRIC_L2
        if config.dtype is AnnDtype.FLOAT32:
            index = faiss.IndexHNSWFlat(dim, config.M, faiss_metric)
        else:
            qtype = (faiss.ScalarQuantizer.QT_fp16 if config.dtype is AnnDtype.FLOAT16
                     else faiss.ScalarQuantizer.QT_8bit)
            index = faiss.IndexHNSWSQ(dim, qtype, config.M, faiss_metric)
        vectors, projection = None, None
        sample = _prepare(embeddings[::max(1, embeddings.shape[0] // 20_000)], metric)
        if config.graph_dims:
            if config.graph_dims >= dim:
                raise ValueError(f"`graph_dims` must be < the embeddings' dim {dim}. "
                                 f"Received: graph_dims={config.graph_dims}")
            # The top principal directions of a spread sample; L2 between projections of unit
            # rows ranks like cosine, so the graph is L2 whatever the metric.
            _, eigvecs = np.linalg.eigh(np.cov(sample, rowvar=False))
            projection = np.ascontiguousarray(eigvecs[:, ::-1][:, :config.graph_dims], dtype=np.float32)
            vectors = flat_index(dim, config.dtype, faiss_metric)
            index = faiss.IndexHNSWFlat(config.graph_dims, config.M, faiss.METRIC_L2)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
        for part in (index, vectors):  # the graph over projections is flat: never untrained
            if part is not None and not part.is_trained:
                part.train(sample)  # SQ8 learns each dimension's range
        self = cls(index, metric, config, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint64),
                   vectors, projection)
        self.add(embeddings)
        return self

    # ----------------------------------------------------------------- properties
    @property
    def size(self) -> int:
        """Rows indexed now (graph nodes less tombstones)."""
        return len(self._node_of)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self._vectors.d)

    @property
    def tombstones(self) -> int:
        """Removed rows still in the graph; rebuild when this nears :attr:`size`."""
        return int(self._index.ntotal) - self.size

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the embeddings this index mirrors (see :func:`embeddings_fingerprint`)."""
        return fingerprint_of(self._digests, self.dim)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index: stored vectors, graph links and the row maps."""
        hnsw, n = self._index.hnsw, int(self._index.ntotal)
        codes = n * int(faiss_storage(self._index).sa_code_size())
        if self._projection is not None:
            codes += n * int(self._vectors.sa_code_size()) + self._projection.nbytes
        graph = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
        maps = self._rows_of.nbytes + self._node_of.nbytes + self._digests.nbytes
        return int(codes + graph + maps)

    # ----------------------------------------------------------------- updates
    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Appends rows: they become rows ``size .. size + len(vectors) - 1``.

        Args:
            vectors: ``(M, dim)`` float array, the rows appended to the store.

        Returns:
            ``(M,)`` int64 row numbers given to them.

        Raises:
            ValueError: Wrong shape.
        """
        if not isinstance(vectors, np.ndarray):
            vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"`vectors` must have shape (M, {self.dim}). Received: {vectors.shape}")
        set_threads(self.config.threads)
        first_node, first_row = int(self._index.ntotal), self.size
        for start in range(0, vectors.shape[0], _CHUNK):
            chunk = _prepare(vectors[start:start + _CHUNK], self.metric)
            if self._projection is not None:
                self._vectors.add(chunk)
                chunk = chunk @ self._projection
            self._index.add(chunk)
        n = vectors.shape[0]
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        self._rows_of = np.concatenate([self._rows_of, rows])
        self._node_of = np.concatenate([self._node_of, np.arange(first_node, first_node + n, dtype=np.int64)])
        self._digests = np.concatenate([self._digests, row_digests(vectors)])
        return rows

    def remove(self, rows: np.ndarray | list[int]) -> None:
        """Deletes rows; later rows move down, as ``np.delete(embeddings, rows, axis=0)`` does.

        The graph keeps the nodes as tombstones (FAISS's HNSW cannot unlink them), which
        searches skip.

        Args:
            rows: Row numbers to delete (any order, duplicates ignored).

        Raises:
            ValueError: A row outside ``[0, size)``.
        """
        rows = np.unique(np.asarray(rows, dtype=np.int64).reshape(-1))
        if rows.size == 0:
            return
        if rows[0] < 0 or rows[-1] >= self.size:
            raise ValueError(f"`rows` must lie in [0, {self.size}). Received: {rows[rows < 0][:1]} "
                             f"{rows[rows >= self.size][:1]}")
        self._rows_of[self._node_of[rows]] = -1
        self._node_of = np.delete(self._node_of, rows)
        self._digests = np.delete(self._digests, rows)
        self._rows_of[self._node_of] = np.arange(self.size, dtype=np.int64)
        self._live = None

    def follow(self, embeddings: np.ndarray) -> tuple[int, int]:
        """Updates the index in place to mirror ``embeddings``: rows gone removed, new ones appended.

        Rows are matched by digest, in order: rows that reappear in the same order are kept, the
        others become tombstones, and the rows after the last kept one are appended. The result
        always mirrors ``embeddings``; it is cheap for what add and remove do (rows removed
        anywhere, rows appended at the end).

        Returns:
            ``(removed, added)`` row counts.
        """
        if getattr(embeddings, "ndim", 0) != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"`embeddings` must have shape (N, {self.dim}). Received: {np.shape(embeddings)}")
        wanted = row_digests(embeddings)
        gone, j = [], 0
        for row, digest in enumerate(self._digests.tolist()):
            if j < len(wanted) and digest == wanted[j]:
                j += 1
            else:
                gone.append(row)
        self.remove(gone)
        if j < len(wanted):
            self.add(embeddings[j:])
        return len(gone), len(wanted) - j

    # ----------------------------------------------------------------- search
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        mask: np.ndarray | None = None,
        exclude: np.ndarray | list[int] | None = None,
        ef_search: int | None = None,
    ) -> Hits:
        """The ``k`` closest rows to each query, approximately.

        Args:
            queries: ``(Q, dim)`` or ``(dim,)``.
            k: How many results per query; fewer come back only when fewer rows are eligible.
            mask: Optional ``(N,)`` bool: only rows where it is True are eligible.
            exclude: Optional ``(Q,)`` row per query to leave out (``-1`` for none).
            ef_search: Beam width for this call (default ``config.ef_search``).

        Returns:
            :class:`Hits` with ``min(k, eligible rows)`` columns, as
            :meth:`imgsim.index.exact.Index.search` returns: cosine similarity or euclidean distance.

        Raises:
            ValueError: ``k <= 0``, or shapes that do not match the index.
        """
        if k <= 0:
            raise ValueError(f"`k` must be >= 1. Received: k={k}")
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have dim {self.dim} like the index. Received shape: {q.shape}")
        q = _prepare(q, self.metric)
        n_queries = q.shape[0]
        if n_queries == 1:
            # One query runs on one thread anyway; an OpenMP team would only wait on cores
            # other processes hold (p95 rose from under 1 ms to 10-40 ms on a busy machine).
            import faiss

            faiss.omp_set_num_threads(1)
            try:
                return self._search(q, k, mask, exclude, ef_search)
            finally:
                set_threads(self.config.threads)
        return self._search(q, k, mask, exclude, ef_search)

    def _search(self, q: np.ndarray, k: int, mask: np.ndarray | None, exclude: Any,
                ef_search: int | None) -> Hits:
        """:meth:`search` on prepared ``(Q, dim)`` queries."""
        n_queries = q.shape[0]
        ef = int(ef_search or self.config.ef_search)

        eligible = None  # bool over graph nodes, None when every live node is eligible
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.size,):
                raise ValueError(f"`mask` must have shape ({self.size},). Received: {mask.shape}")
            eligible = np.zeros(int(self._index.ntotal), dtype=bool)
            eligible[self._node_of[mask]] = True
        elif self.tombstones:
            if self._live is None or len(self._live) != len(self._rows_of):
                self._live = self._rows_of >= 0
            eligible = self._live
        n_eligible = self.size if eligible is None else int(mask.sum() if mask is not None else self.size)

        excluded = np.full(n_queries, -1, dtype=np.int64)  # graph node per query, -1 for none
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
            if exclude.shape != (n_queries,):
                raise ValueError(f"`exclude` needs one row per query ({n_queries}). Received: {exclude.shape}")
            if np.any(exclude >= self.size):
                raise ValueError(f"`exclude` rows must be < {self.size}. Received: {exclude.max()}")
            valid = exclude >= 0
            excluded[valid] = self._node_of[exclude[valid]]
            if eligible is not None:
                excluded[valid & ~eligible[np.maximum(excluded, 0)]] = -1
        # Like Index.search: as many columns as the query with the fewest eligible rows allows.
        k_eff = int(min(k, n_eligible - int(np.any(excluded >= 0))))
        if k_eff <= 0:
            return Hits(np.empty((n_queries, 0), np.int64), np.empty((n_queries, 0), np.float32))
        if n_eligible <= self.config.exact_below:
            nodes, scores = self._exact(q, k_eff, eligible, excluded)
        else:
            # A filter keeping a fraction f of the rows leaves about f * ef of them in the beam:
            # widen it by 1/f so as many eligible rows compete as without a filter.
            ef = min(_MAX_EF, -(-ef * self.size // n_eligible))
            nodes, scores = self._graph(q, k_eff, eligible, excluded, ef)
        return Hits(self._rows_of[nodes], scores)

    def _graph(self, q: np.ndarray, k: int, eligible: np.ndarray | None, excluded: np.ndarray,
               ef: int) -> tuple[np.ndarray, np.ndarray]:
        """Graph search, widening the beam (then searching exactly) for queries left short."""
        import faiss

        fetch = k + int(np.any(excluded >= 0))
        if self._projection is not None:
            fetch = max(fetch, self.config.rerank * k)
        selector, _bits = _selector(eligible)
        q_graph = q if self._projection is None else np.ascontiguousarray(q @ self._projection)
        nodes = np.full((q.shape[0], k), -1, dtype=np.int64)
        scores = np.zeros((q.shape[0], k), dtype=np.float32)
        todo = np.arange(q.shape[0])
        ef = max(ef, fetch)
        for _ in range(_RETRIES + 1):
            params = faiss.SearchParametersHNSW(efSearch=ef)
            if selector is not None:
                params.sel = selector
            dist, found = self._index.search(q_graph[todo], fetch, params=params)
            if self._projection is not None:
                dist, found = self._rescore(q[todo], found)
            todo = self._collect(dist, found, todo, excluded, nodes, scores)
            if todo.size == 0:
                return nodes, scores
            ef *= _WIDEN
        # Still short after widening (a very selective filter): answer those queries exactly.
        nodes[todo], scores[todo] = self._exact(q[todo], k, eligible, excluded[todo])
        return nodes, scores

    def _exact(self, q: np.ndarray, k: int, eligible: np.ndarray | None,
               excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the eligible nodes' stored vectors, a chunk of rows at a time.

        The caller guarantees every query has at least ``k`` eligible, non-excluded nodes.
        """
        import faiss

        fetch = k + int(np.any(excluded >= 0))
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric is Metric.COSINE else faiss.METRIC_L2
        candidates = np.flatnonzero(self._rows_of >= 0 if eligible is None else eligible)
        found_parts, dist_parts = [], []
        for start in range(0, len(candidates), _CHUNK):
            part = candidates[start:start + _CHUNK]
            vectors = self._vectors.reconstruct_batch(part)
            dist, local = faiss.knn(q, vectors, min(fetch, len(part)), metric=faiss_metric)
            found_parts.append(np.where(local >= 0, part[np.maximum(local, 0)], -1))
            dist_parts.append(dist)
        found, dist = np.concatenate(found_parts, axis=1), np.concatenate(dist_parts, axis=1)
        if len(found_parts) > 1:
            order = np.argsort(-dist if self.metric is Metric.COSINE else dist, axis=1, kind="stable")[:, :fetch]
            found, dist = np.take_along_axis(found, order, axis=1), np.take_along_axis(dist, order, axis=1)
        nodes = np.full((q.shape[0], k), -1, dtype=np.int64)
        scores = np.zeros((q.shape[0], k), dtype=np.float32)
        short = self._collect(dist, found, np.arange(q.shape[0]), excluded, nodes, scores)
        if short.size:  # cannot happen when the caller counted right
            raise RuntimeError(f"exact search found fewer than {k} rows for {short.size} queries")
        return nodes, scores

    def _rescore(self, q: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Graph candidates re-scored on the stored vectors, best first, in FAISS's convention."""
        valid = found >= 0
        unique = np.unique(found[valid])
        if unique.size == 0:  # the graph met no eligible node: every query is short
            return np.zeros(found.shape, np.float32), np.full(found.shape, -1, dtype=np.int64)
        vectors = self._vectors.reconstruct_batch(unique)[np.searchsorted(unique, np.maximum(found, 0))]
        dot = np.einsum("qfd,qd->qf", vectors, q)
        if self.metric is Metric.COSINE:
            dist = np.where(valid, dot, -np.inf)
            order = np.argsort(-dist, axis=1, kind="stable")
        else:
            sq = np.einsum("qfd,qfd->qf", vectors, vectors) - 2 * dot + np.einsum("qd,qd->q", q, q)[:, None]
            dist = np.where(valid, sq, np.inf)
            order = np.argsort(dist, axis=1, kind="stable")
        found = np.where(valid, found, -1)
        return np.take_along_axis(dist, order, axis=1), np.take_along_axis(found, order, axis=1)

    def _collect(self, dist: np.ndarray, found: np.ndarray, todo: np.ndarray, excluded: np.ndarray,
                 nodes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Writes each query's first ``k`` valid, non-excluded hits; returns the queries left short."""
        k = nodes.shape[1]
        keep = (found >= 0) & (found != excluded[todo][:, None])
        enough = keep.sum(axis=1) >= k
        for j in np.flatnonzero(enough):
            nodes[todo[j]] = found[j][keep[j]][:k]
            scores[todo[j]] = self._score(dist[j][keep[j]][:k])
        return todo[~enough]

    def _score(self, dist: np.ndarray) -> np.ndarray:
        """FAISS distances as :class:`Hits` scores (inner product, or squared L2 -> L2)."""
        if self.metric is Metric.COSINE:
            return dist.astype(np.float32)
        return np.sqrt(np.maximum(dist, 0.0)).astype(np.float32)

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes the index as a directory, atomically (see the module docstring).

        Args:
            directory: Where to write it, e.g. ``CATALOG/stores/<approach>.ann``.

        Returns:
            The directory.
        """
        return hnsw_files.save(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, embeddings: np.ndarray | None,
             *, threads: int | None = None) -> AnnIndex:
        """Loads an index saved by :meth:`save` and checks it against the embeddings it serves.

        Args:
            directory: The index directory.
            embeddings: ``(N, dim)``: the store's matrix now; its fingerprint must equal the one
                the index was saved with.
            threads: OpenMP threads (default: the saved config's).

        Raises:
            ArtifactError: Nothing loadable there.
            AnnMismatchError: Another format or library, or built for other embeddings.
        """
        return cls(**hnsw_files.load(directory, embeddings, threads=threads))


def _selector(eligible: np.ndarray | None) -> tuple[Any, np.ndarray | None]:
    """A FAISS bitmap selector over graph nodes, and the bitmap it points into (keep it alive)."""
    if eligible is None:
        return None, None
    import faiss

    bits = np.packbits(eligible, bitorder="little")
    return faiss.IDSelectorBitmap(len(eligible), faiss.swig_ptr(bits)), bits


def _prepare(x: np.ndarray, metric: Metric) -> np.ndarray:
    """Float32, C-contiguous, and unit rows for cosine (so inner product is cosine)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric is Metric.COSINE:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


class HnswBackend(SearchBackend):
    """An :class:`AnnIndex` as a :class:`~imgsim.index.backend.SearchBackend`.

    Args:
        index: The loaded index.
        items: The catalogue's items, row-aligned with the index (for filters).
    """

    def __init__(self, index: AnnIndex, items: pd.DataFrame) -> None:
        if index.size != len(items):
            raise ValueError(f"`items` must have one row per indexed row ({index.size}). Received: {len(items)}")
        self.index = index
        self.metric = index.metric
        self.items = items

    def search(self, queries: np.ndarray, k: int, *, filter: Filter = NO_FILTER) -> Hits:
        """The ``k`` closest rows to each query, approximately (see :meth:`AnnIndex.search`)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        mask, exclude = filter.row_arguments(self.items, len(queries))
        return self.index.search(queries, k, mask=mask, exclude=exclude)

    def describe(self) -> str:
        """``approximate (HNSW)``."""
        return "approximate (HNSW)"


def ann_dir(store_root: Path, approach: str) -> Path:
    """Where the approximate index of a store lives: ``stores/<approach>.ann`` beside it."""
    return layout.ann_dir(store_root, approach)


def open_backend(opening: Opening) -> HnswBackend | None:
    """The store's HNSW index if a current one exists for its own metric, else None.

    A stale index (the catalogue changed since it was built) is passed over: exact search stays
    correct until a refresh rebuilds it.
    """
    if opening.served_remotely or opening.metric is not opening.store_metric:
        return None
    path = ann_dir(opening.store.root, opening.approach)
    if not path.is_dir():
        return None
    try:
        return HnswBackend(AnnIndex.load(path, opening.store.embeddings), opening.items)
    except ArtifactError:
        return None
