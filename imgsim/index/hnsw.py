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

On disk (:meth:`AnnIndex.save`), a directory written atomically::

    manifest.json   kind "ann_index": format version, library and version, index type and
                    parameters, metric, count, dim, fingerprint of the embeddings it indexes
    index.faiss     the FAISS HNSW graph in FAISS's own binary format
    vectors.faiss   with ``graph_dims``: the stored vectors (flat), the graph links projections
    projection.npy  with ``graph_dims``: (dim, graph_dims) float32 PCA directions
    rows.npy        (ntotal,) int64: the store row of each graph node, -1 for a tombstone
    digests.npy     (count,) uint64: a hash of each indexed row, in row order

:meth:`AnnIndex.load` refuses an index whose fingerprint differs from the embeddings it is handed.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.index.exact import Hits, Metric
from imgsim.storage.artifacts import (
    ArtifactError,
    atomic_directory,
    library_versions,
    now_iso,
    read_manifest,
    write_json_atomic,
)

KIND = "ann_index"
FORMAT_VERSION = 1
LIBRARY = "faiss-cpu"
# Rows handed to FAISS per call, so a float16 or memory-mapped matrix is never copied whole.
_CHUNK = 32_768
# A query the graph leaves short is retried with its beam this many times wider, this often.
_WIDEN = 4
_RETRIES = 3
# The widest beam a filtered search starts with (a 1% filter at ef 64 would ask for 6,400).
_MAX_EF = 2_048


class AnnKind(enum.StrEnum):
    """The index structure. Only HNSW is offered: it needs no training and takes additions."""

    HNSW = "hnsw"


class AnnDtype(enum.StrEnum):
    """How vectors are stored in the graph: 4, 2 or 1 byte(s) a dimension."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    SQ8 = "sq8"


class AnnMismatchError(ArtifactError):
    """An ANN index was built for other embeddings, or by another library or format."""


@dataclasses.dataclass(frozen=True)
class AnnConfig:
    """How an approximate index is built and searched.

    Attributes:
        kind: The index structure (``hnsw``).
        M: Graph neighbours per node (FAISS keeps ``2 * M`` on the bottom layer).
        ef_construction: Beam width while inserting; wider builds slower and recalls more.
        ef_search: Beam width while searching (raised to ``k`` when ``k`` is larger).
        dtype: ``float32``, ``float16`` (half the memory) or ``sq8`` (a quarter, trained on the
            rows first built).
        min_rows: Stores with at least this many rows should be searched through the index
            (see :func:`should_use_ann`); below it exact search is fast enough.
        exact_below: A filtered search with at most this many eligible rows is answered exactly
            over those rows instead of through the graph.
        threads: OpenMP threads for building and batched queries; 0 means every core this
            process may use. Never more than that.
        graph_dims: 0 links the graph over the stored vectors. Otherwise the graph links PCA
            projections of them to this many dims (about 10x cheaper to build at 1280 -> 128),
            and each query's ``rerank * k`` graph candidates are re-scored on the stored vectors.
        rerank: Candidates per result re-scored when ``graph_dims`` is set.
    """

    kind: AnnKind | str = AnnKind.HNSW
    M: int = 32  # noqa: N815 - the name every HNSW paper and library uses
    ef_construction: int = 80
    ef_search: int = 64
    dtype: AnnDtype | str = AnnDtype.FLOAT16
    min_rows: int = 200_000
    exact_below: int = 4_096
    threads: int = 0
    graph_dims: int = 0
    rerank: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _enum(AnnKind, self.kind, "kind"))
        object.__setattr__(self, "dtype", _enum(AnnDtype, self.dtype, "dtype"))
        for name, low in (("M", 2), ("ef_construction", 1), ("ef_search", 1), ("min_rows", 0),
                          ("exact_below", 0), ("threads", 0), ("graph_dims", 0), ("rerank", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")

    def to_json(self) -> dict[str, Any]:
        """The fields as plain JSON values."""
        return {f.name: str(v) if isinstance(v, enum.Enum) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


def _enum(cls: type[enum.StrEnum], value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"`{name}` must be one of {allowed}. Received: {name}={value!r}") from None


def should_use_ann(n_rows: int, config: AnnConfig | None = None) -> bool:
    """Whether a store of ``n_rows`` rows is better searched through an ANN index.

    Args:
        n_rows: Rows in the store.
        config: Supplies ``min_rows``; the default config when omitted.

    Returns:
        ``True`` at or above ``config.min_rows``.
    """
    config = config or AnnConfig()
    return n_rows >= config.min_rows


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int = 0) -> int:
    """Sets FAISS's OpenMP thread count, capped at :func:`usable_cores`; 0 means all of them.

    Returns:
        The number of threads set.
    """
    import faiss

    n = usable_cores() if threads <= 0 else min(threads, usable_cores())
    faiss.omp_set_num_threads(n)
    return n


_HASH_SEED = 0x1_5EA2C4


def row_digests(embeddings: np.ndarray, chunk: int = 8_192) -> np.ndarray:
    """A 64-bit hash of each row's float32 bits: ``sum_j bits[j] * P[j] mod 2**64``.

    ``P`` are fixed odd random multipliers, so any change to one value changes its row's hash.
    Vectorised, about a second per million 1280-d rows; not meant to resist a forger.

    Args:
        embeddings: ``(N, dim)``, any float dtype (hashed as float32).

    Returns:
        ``(N,)`` uint64.
    """
    n, dim = embeddings.shape
    multipliers = np.random.default_rng(_HASH_SEED).integers(0, 2**63, dim, dtype=np.uint64) * 2 + 1
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, chunk):
        bits = np.ascontiguousarray(embeddings[start:start + chunk], dtype=np.float32).view(np.uint32)
        out[start:start + chunk] = (bits.astype(np.uint64) * multipliers).sum(axis=1, dtype=np.uint64)
    return out


def fingerprint_of(digests: np.ndarray, dim: int) -> str:
    """The fingerprint of a matrix from its :func:`row_digests` and its dim."""
    digest = hashlib.sha256(f"{len(digests)}x{dim}\n".encode())
    digest.update(np.ascontiguousarray(digests, dtype="<u8").tobytes())
    return digest.hexdigest()


def embeddings_fingerprint(embeddings: np.ndarray) -> str:
    """The fingerprint an ANN index records for the ``(N, dim)`` matrix it indexes."""
    embeddings = np.asarray(embeddings) if not isinstance(embeddings, np.ndarray) else embeddings
    if embeddings.ndim != 2:
        raise ValueError(f"`embeddings` must be 2-D (N, dim). Received shape: {embeddings.shape}")
    return fingerprint_of(row_digests(embeddings), embeddings.shape[1])


class AnnIndex:
    """An HNSW index over a store's rows, searched like :class:`imgsim.index.exact.Index`.

    Build with :meth:`build` or :meth:`load`, not the constructor.
    """

    def __init__(self, index: Any, metric: Metric, config: AnnConfig, rows_of: np.ndarray,
                 digests: np.ndarray, vectors: Any = None, projection: np.ndarray | None = None) -> None:
        self._index = index  # the HNSW graph
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
            vectors = _flat_index(dim, config.dtype, faiss_metric)
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

    # ----------------------------------------------------------------- disk
    def save(self, directory: str | os.PathLike) -> Path:
        """Writes the index as a directory, atomically (see the module docstring).

        Args:
            directory: Where to write it, e.g. ``CATALOG/stores/<approach>/ann`` or beside it.

        Returns:
            The directory.
        """
        import faiss

        directory = Path(directory)
        manifest = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "library": LIBRARY,
            "library_version": faiss.__version__,
            "index_type": type(self._index).__name__ + (
                f" on PCA-{self._projection.shape[1]}, re-ranked on {type(self._vectors).__name__}"
                if self._projection is not None else ""),
            "config": self.config.to_json(),
            "metric": str(self.metric),
            "count": self.size,
            "nodes": int(self._index.ntotal),
            "dim": self.dim,
            "fingerprint": self.fingerprint,
            "created": now_iso(),
            "library_versions": library_versions(),
        }
        with atomic_directory(directory) as tmp:
            faiss.write_index(self._index, str(tmp / "index.faiss"))
            if self._projection is not None:
                faiss.write_index(self._vectors, str(tmp / "vectors.faiss"))
                np.save(tmp / "projection.npy", self._projection, allow_pickle=False)
            np.save(tmp / "rows.npy", self._rows_of, allow_pickle=False)
            np.save(tmp / "digests.npy", self._digests, allow_pickle=False)
            write_json_atomic(tmp / "manifest.json", manifest)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, embeddings: np.ndarray,
             *, threads: int | None = None) -> AnnIndex:
        """Loads an index saved by :meth:`save` and checks it against the embeddings it serves.

        Args:
            directory: The index directory.
            embeddings: ``(N, dim)``: the store's matrix now. Its fingerprint must equal the one
                the index was saved with.
            threads: OpenMP threads (default: the saved config's).

        Raises:
            ArtifactError: Nothing loadable there.
            AnnMismatchError: Another format or library, or built for other embeddings (the
                message says which, and to rebuild).
        """
        import faiss

        directory = Path(directory)
        manifest = read_manifest(directory, KIND)
        rebuild = "rebuild it with AnnIndex.build"
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("library") != LIBRARY:
            raise AnnMismatchError(
                f"ANN index {directory} has format {manifest.get('format_version')} by "
                f"{manifest.get('library')}; expected format {FORMAT_VERSION} by {LIBRARY}; {rebuild}")
        shape = tuple(getattr(embeddings, "shape", ()))
        if shape != (manifest.get("count"), manifest.get("dim")):
            raise AnnMismatchError(
                f"ANN index {directory} indexes {manifest.get('count')} rows of dim {manifest.get('dim')}, "
                f"but the embeddings have shape {shape}; {rebuild}")
        if embeddings_fingerprint(embeddings) != manifest.get("fingerprint"):
            raise AnnMismatchError(
                f"ANN index {directory} was built for other embeddings of the same shape {shape}; {rebuild}")
        try:
            config = AnnConfig(**manifest["config"])
            if threads is not None:
                config = dataclasses.replace(config, threads=threads)
            metric = Metric(manifest["metric"])
            set_threads(config.threads)
            index = faiss.read_index(str(directory / "index.faiss"))
            vectors, projection = None, None
            if config.graph_dims:
                vectors = faiss.read_index(str(directory / "vectors.faiss"))
                projection = np.load(directory / "projection.npy", allow_pickle=False)
            rows_of = np.load(directory / "rows.npy", allow_pickle=False)
            digests = np.load(directory / "digests.npy", allow_pickle=False)
        except (KeyError, TypeError, ValueError, OSError, RuntimeError) as err:
            raise ArtifactError(f"ANN index {directory} is damaged: {err}; {rebuild}") from err
        if (index.ntotal != len(rows_of) or index.ntotal != manifest.get("nodes")
                or len(digests) != manifest["count"] or (vectors or index).d != manifest["dim"]
                or (vectors is not None and vectors.ntotal != index.ntotal)):
            raise ArtifactError(f"ANN index {directory} is damaged: its files disagree with its manifest")
        return cls(index, metric, config, rows_of.astype(np.int64), digests.astype(np.uint64),
                   vectors, projection)


def faiss_storage(index: Any) -> Any:
    """The flat storage behind a FAISS HNSW index."""
    import faiss

    return faiss.downcast_index(index.storage)


def _flat_index(dim: int, dtype: AnnDtype, faiss_metric: int) -> Any:
    """A flat FAISS index storing vectors as ``dtype``."""
    import faiss

    if dtype is AnnDtype.FLOAT32:
        return faiss.IndexFlat(dim, faiss_metric)
    qtype = faiss.ScalarQuantizer.QT_fp16 if dtype is AnnDtype.FLOAT16 else faiss.ScalarQuantizer.QT_8bit
    return faiss.IndexScalarQuantizer(dim, qtype, faiss_metric)


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
