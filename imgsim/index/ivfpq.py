"""A compressed index for big stores: FAISS IVF-PQ giving a shortlist, re-ranked on stored vectors.

At 1M x 1280 an HNSW graph over the full vectors takes hours to build on two cores, and one over
PCA projections recalls too little (README "Scaling"). Here each row is kept twice, small:

- a 64-byte product-quantised code in one of ``nlist`` inverted lists (coarse k-means cells),
  which a query scans ``nprobe`` of to pick a ``shortlist`` of candidates;
- a re-rank vector (sq8 by default: one byte a dimension, 1.2 GB at 1M x 1280, memory-mapped
  from the index file) on which the shortlist is scored again, nearly exactly.

Served from a catalogue (``load(..., refine=True)``), each query's best ``_REFINE * (k + 1)``
candidates are scored last on the store's own matrix (memory-mapped: only those rows are read).

:class:`IvfPqIndex` is an :class:`~imgsim.index.hnsw.AnnIndex` with IVF lists in place of the
graph, so it keeps every guarantee that class gives: filters applied inside the scan (a FAISS
bitmap selector; the lists scanned are the nearest ones holding enough eligible rows), filters
keeping at most ``exact_below`` rows answered exactly, queries left short retried wider and then
exactly, an excluded row fetched one deeper, row numbering after ``remove`` as ``np.delete``
gives, and removed rows kept as tombstones every answer skips until a rebuild compacts them.
Rows added in place are encoded with the codebooks and sq8 ranges learnt at the build (a value
outside those ranges is clamped); the rebuild at compaction learns them again.

On disk: see :mod:`imgsim.index.ivfpq_files`. :class:`IvfPqBackend` is the index as a search backend.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.index import ivfpq_files
from imgsim.index.backend import Metric, Opening
from imgsim.index.hnsw import _MAX_EF, _RETRIES, _WIDEN, AnnIndex, HnswBackend, _prepare, _selector
from imgsim.index.hnsw_config import flat_index, set_threads
from imgsim.index.hnsw_files import AnnMismatchError  # noqa: F401 (re-exported: what a stale index raises)
from imgsim.index.ivfpq_files import IvfPqConfig
from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactError

__all__ = ["IvfPqBackend", "IvfPqConfig", "IvfPqIndex", "open_backend"]

# A filtered search scans the lists nearest the query until they hold this many times the rows
# an unfiltered scan of ``nprobe`` lists sees, counting eligible rows only.
_ELIGIBLE_MARGIN = 2
# ... and re-ranks this many times the shortlist: a filter's nearest rows lie farther out, where
# PQ scores rank worse (at 1M, filters of 1.0% / 17.7% of rows: recall@10 0.948 / 0.930 from
# 4 x 128 candidates, 0.990 / 0.966 from 8 x 128; benchmarks/search.py --ann).
_FILTER_SHORTLIST = 8
# With the store's own vectors at hand, this many candidates per result are scored on them last:
# the sq8 re-rank alone levels off at recall@10 0.953 at 1M (benchmarks/search.py --ann).
_REFINE = 4


class IvfPqIndex(AnnIndex):
    """An IVF-PQ index over a store's rows, searched like :class:`imgsim.index.exact.Index`.

    Build with :meth:`build` or :meth:`load`, not the constructor.
    """

    config: IvfPqConfig

    def __init__(self, index: Any, metric: Metric, config: IvfPqConfig, rows_of: np.ndarray,
                 digests: np.ndarray, vectors: Any, build_id: str | None = None, mapped: bool = False,
                 exact: np.ndarray | None = None) -> None:
        super().__init__(_ListsAndVectors(index, vectors), metric, config, rows_of, digests, vectors, None, build_id)
        self._mapped = mapped  # the re-rank vectors are a read-only memory map
        self._lists: np.ndarray | None = None  # see _list_of_nodes
        # The store's (N, dim) matrix (memory-mapped), row-aligned with the index: the last,
        # exact scoring of each query's best candidates (see _refine). Only their rows are read.
        self.exact = exact

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, embeddings: np.ndarray, metric: Metric | str = Metric.COSINE,
              config: IvfPqConfig | None = None) -> IvfPqIndex:
        """Trains the coarse centroids and PQ codebooks on a spread sample, then adds every row.

        Args:
            embeddings: ``(N, dim)`` float array (float16 or memory-mapped work; rows are read in
                chunks). For cosine, rows are normalised first.
            metric: ``cosine`` or ``euclidean``.
            config: Build and search parameters; the defaults when omitted.

        Returns:
            The index; row ``i`` is row ``i`` of ``embeddings``.

        Raises:
            ValueError: Not a 2-D matrix, fewer rows than one PQ codebook needs
                (``2 ** nbits``), or an ``m`` that does not divide the dim.
        """
        import faiss

        config = config or IvfPqConfig()
        metric = Metric(metric)
        if not isinstance(embeddings, np.ndarray):
            embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] == 0:
            raise ValueError(f"`embeddings` must be a non-empty 2-D (N, dim) matrix. Received shape: {embeddings.shape}")
        n, dim = embeddings.shape
        if n < 2 ** config.nbits:
            raise ValueError(f"an IVF-PQ index needs at least {2 ** config.nbits} rows to train its codebooks "
                             f"(nbits={config.nbits}). Received: {n} rows")
        set_threads(config.threads)
        nlist, m = config.lists_for(n), config.subquantizers(dim)
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric is Metric.COSINE else faiss.METRIC_L2
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x{config.nbits}np", faiss_metric)
        index.cp.niter = 12  # coarse k-means: past ~10 passes the cells barely move
        # "np": no polysemous training (it only serves Hamming pre-filtering, unused here, and
        # took 12 s on 4,000 rows).
        index.cp.max_points_per_centroid = config.train_per_list
        wanted = max(nlist * config.train_per_list, 64 * 2 ** config.nbits)
        sample = _prepare(embeddings[::max(1, n // wanted)], metric)
        index.train(sample)
        vectors = flat_index(dim, config.rerank_dtype, faiss_metric)
        if not vectors.is_trained:
            vectors.train(sample)  # sq8 learns each dimension's range
        self = cls(index, metric, config, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint64), vectors)
        self.add(embeddings)
        return self

    # ----------------------------------------------------------------- properties
    @property
    def nlist(self) -> int:
        """Inverted lists."""
        return int(self._index.nlist)

    @property
    def code_size(self) -> int:
        """Bytes of one PQ code."""
        return int(self._index.code_size)

    @property
    def nbytes(self) -> int:
        """Bytes held: PQ codes with their ids, centroids and codebooks, re-rank vectors, row maps."""
        nodes = int(self._index.ntotal)
        pq = self._index.pq
        lists = nodes * (self.code_size + 8) + self.nlist * self.dim * 4 + pq.M * pq.ksub * pq.dsub * 4
        maps = self._rows_of.nbytes + self._node_of.nbytes + self._digests.nbytes
        return int(lists + nodes * int(self._vectors.sa_code_size()) + maps)

    # ----------------------------------------------------------------- updates
    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Appends rows: each is encoded into its list and its re-rank vector stored; no retraining.

        Args:
            vectors: ``(M, dim)`` float array, the rows appended to the store.

        Returns:
            ``(M,)`` int64 row numbers given to them.

        Raises:
            ValueError: Wrong shape, or an index loaded memory-mapped (read-only).
        """
        if self._mapped:
            # FAISS aborts the process when a memory-mapped flat index grows.
            raise ValueError("this IVF-PQ index was loaded memory-mapped for serving and is read-only; "
                             "load it with mmap=False to add rows")
        return super().add(vectors)  # each prepared chunk goes to _ListsAndVectors.add

    # ----------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int, *, mask: np.ndarray | None = None,
               exclude: np.ndarray | list[int] | None = None, nprobe: int | None = None) -> Any:
        """The ``k`` closest rows to each query, approximately.

        Args:
            queries: ``(Q, dim)`` or ``(dim,)``.
            k: How many results per query; fewer come back only when fewer rows are eligible.
            mask: Optional ``(N,)`` bool: only rows where it is True are eligible.
            exclude: Optional ``(Q,)`` row per query to leave out (``-1`` for none).
            nprobe: Lists scanned for this call (default ``config.nprobe``).

        Returns:
            :class:`~imgsim.index.backend.Hits` with ``min(k, eligible rows)`` columns, as
            :meth:`imgsim.index.exact.Index.search` returns: cosine similarity or euclidean distance.

        Raises:
            ValueError: ``k <= 0``, or shapes that do not match the index.
        """
        return super().search(queries, k, mask=mask, exclude=exclude, ef_search=nprobe)

    def _graph(self, q: np.ndarray, k: int, eligible: np.ndarray | None, excluded: np.ndarray,
               ef: int) -> tuple[np.ndarray, np.ndarray]:
        """The IVF-PQ shortlist re-scored; ``ef`` is the ``nprobe`` already widened by a filter.

        Queries left short (a selective filter, lists with too few eligible rows) scan more
        lists, and are then answered exactly.
        """
        import faiss

        fetch = max(k + int(np.any(excluded >= 0)), self.config.shortlist)
        if eligible is not None:
            fetch *= _FILTER_SHORTLIST
        selector, _bits = _selector(eligible)
        nodes = np.full((q.shape[0], k), -1, dtype=np.int64)
        scores = np.zeros((q.shape[0], k), dtype=np.float32)
        todo = np.arange(q.shape[0])
        nprobe = min(ef, _MAX_EF, self.nlist) if eligible is None else self._probes_holding(q, eligible, ef)
        for _ in range(_RETRIES + 1):
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            if selector is not None:
                params.sel = selector
            _, found = self._index.search(q[todo], fetch, params=params)
            dist, found = self._rescore(q[todo], found)
            if self.exact is not None:
                dist, found = self._refine(q[todo], found[:, :_REFINE * (k + 1)])
            todo = self._collect(dist, found, todo, excluded, nodes, scores)
            if todo.size == 0 or nprobe >= self.nlist:
                break
            nprobe = min(self.nlist, nprobe * _WIDEN)
        if todo.size:
            nodes[todo], scores[todo] = self._exact(q[todo], k, eligible, excluded[todo])
        return nodes, scores

    def _refine(self, q: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates (nodes, best first) scored again on the store's own rows, best first."""
        on_store = types.SimpleNamespace(_vectors=_StoreRows(self.exact, self._rows_of, self.metric), metric=self.metric)
        return AnnIndex._rescore(on_store, q, found)  # the re-rank AnnIndex does, on other vectors

    def _probes_holding(self, q: np.ndarray, eligible: np.ndarray, widened: int) -> int:
        """Lists to scan so the ones nearest each query hold as many eligible rows as an unfiltered scan sees.

        A filter's rows are not spread evenly over the lists: a category fills the lists of its
        own region of the space. Widening ``nprobe`` by the filter's share (what AnnIndex does to
        a beam) scans lists near the query that hold few eligible rows: recall@10 0.74 at 100k
        rows with a 17.7% category filter (benchmarks/search.py --ann). Counting the eligible
        rows of the lists nearest each query tells how far to go.
        """
        n_eligible = int(eligible.sum())
        base = max(1, round(widened * n_eligible / max(1, self.size)))  # AnnIndex's widening undone
        target = _ELIGIBLE_MARGIN * base * self.size / self.nlist
        counts = np.bincount(self._list_of_nodes()[eligible], minlength=self.nlist)
        _, order = self._index.quantizer.search(q, self.nlist)
        held = np.cumsum(counts[np.maximum(order, 0)], axis=1)
        return int(min(self.nlist, (held < target).sum(axis=1).max() + 1))

    def _list_of_nodes(self) -> np.ndarray:
        """``(nodes,)`` int64: the inverted list each node is in (cached until rows are added)."""
        import faiss

        nodes = int(self._index.ntotal)
        if self._lists is None or len(self._lists) != nodes:
            invlists, lists = self._index.invlists, np.zeros(nodes, dtype=np.int64)
            for number in range(self.nlist):
                size = invlists.list_size(number)
                if size:
                    lists[faiss.rev_swig_ptr(invlists.get_ids(number), size)] = number
            self._lists = lists
        return self._lists

    # ----------------------------------------------------------------- files
    def save(self, directory: str | os.PathLike) -> Path:
        """Writes the index as a directory, atomically (see :mod:`imgsim.index.ivfpq_files`).

        Returns:
            The directory.
        """
        return ivfpq_files.save(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, embeddings: np.ndarray | None, *, mmap: bool = True,
             threads: int | None = None, refine: bool = False) -> IvfPqIndex:
        """Loads an index saved by :meth:`save` and checks it against the embeddings it serves.

        Args:
            directory: The index directory.
            embeddings: ``(N, dim)``: the store's matrix now; ``None`` skips the check (to update
                the index in place with :meth:`follow`, which needs ``mmap=False``).
            mmap: Memory-map the re-rank vectors (read-only).
            threads: OpenMP threads (default: the saved config's).
            refine: Score each query's best candidates last on ``embeddings`` themselves (the
                store's matrix, memory-mapped: only those rows are read).

        Raises:
            ArtifactError: Nothing loadable there, or damaged files.
            AnnMismatchError: Another format or library, or built for other embeddings.
        """
        index = cls(**ivfpq_files.load(directory, embeddings, mmap=mmap, threads=threads))
        if refine and embeddings is not None:
            index.exact = embeddings
        return index


class _StoreRows:
    """The store's rows of graph nodes, prepared as the index prepares its own (``reconstruct_batch``)."""

    def __init__(self, matrix: np.ndarray, rows_of: np.ndarray, metric: Metric) -> None:
        self.matrix, self.rows_of, self.metric = matrix, rows_of, metric

    def reconstruct_batch(self, nodes: np.ndarray) -> np.ndarray:
        return _prepare(np.asarray(self.matrix[self.rows_of[nodes]]), self.metric)


class _ListsAndVectors:
    """The FAISS IVF-PQ index, standing in for the graph :class:`AnnIndex` adds to and searches.

    ``add`` also stores each chunk's re-rank vectors (AnnIndex adds prepared chunks to its graph
    only); everything else is the IVF-PQ index's own.
    """

    def __init__(self, ivf: Any, vectors: Any) -> None:
        self.ivf, self.vectors = ivf, vectors

    def add(self, chunk: np.ndarray) -> None:
        self.ivf.add(chunk)
        self.vectors.add(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ivf, name)


class IvfPqBackend(HnswBackend):
    """An :class:`IvfPqIndex` as a :class:`~imgsim.index.backend.SearchBackend`.

    Args:
        index: The loaded index.
        items: The catalogue's items, row-aligned with the index (for filters).
    """

    def describe(self) -> str:
        """``approximate (IVF-PQ, re-ranked)``."""
        return "approximate (IVF-PQ, re-ranked)"


def open_backend(opening: Opening) -> IvfPqBackend | None:
    """The store's IVF-PQ index if a current one exists for its own metric, else None.

    A stale index (the catalogue changed since it was built) is passed over: the next kind
    (exact search at the end) answers until a refresh brings it up to date.
    """
    if opening.served_remotely or opening.metric is not opening.store_metric:
        return None
    path = layout.ivfpq_dir(opening.store.root, opening.approach)
    if not path.is_dir():
        return None
    try:
        return IvfPqBackend(IvfPqIndex.load(path, opening.store.embeddings, refine=True), opening.items)
    except ArtifactError:
        return None
