"""How an IVF-PQ index is configured, and how it lies on disk: refused when it indexes other embeddings.

The directory (``CATALOG/stores/<approach>.ivfpq``)::

    manifest.json   kind "ivfpq_index": format version, library and version, config, metric,
                    count, nodes, dim, fingerprint of the embeddings it indexes, build id
    index.faiss     the FAISS IndexIVFPQ (coarse centroids, PQ codebooks, inverted lists)
    vectors.faiss   the re-rank vectors: a FAISS flat index (sq8 or float16 codes), memory-mapped
                    when served, so only the pages queries touch are resident
    rows.npy        (nodes,) int64: the store row of each node, -1 for a tombstone
    digests.npy     (count,) uint64: a hash of each indexed row, in row order
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.index.backend import Metric
from imgsim.index.hnsw_config import AnnDtype, _enum, set_threads
from imgsim.index.hnsw_files import check_manifest
from imgsim.storage.artifacts import (
    ArtifactError,
    atomic_directory,
    library_versions,
    now_iso,
    read_manifest,
    write_json_atomic,
)

KIND = "ivfpq_index"
FORMAT_VERSION = 1
LIBRARY = "faiss-cpu"


@dataclasses.dataclass(frozen=True)
class IvfPqConfig:
    """How an IVF-PQ index is built and searched.

    Each query scans ``nprobe`` of ``nlist`` inverted lists of product-quantised codes, keeps the
    ``shortlist`` best by those approximate scores, and re-scores them on the re-rank vectors.

    Attributes:
        nlist: Inverted lists (coarse k-means centroids); 0 picks ``2 * sqrt(N)`` rounded to a
            power of two when built (2,048 at 1M rows), at most ``N / 32``.
        m: PQ sub-quantizers (bytes per code at 8 bits); must divide the dim. 0 picks the divisor
            of the dim nearest ``dim / 20`` (64 at 1280-d).
        nbits: Bits per sub-quantizer code.
        nprobe: Lists scanned per query; a filter keeping a share ``f`` of the rows scans
            ``nprobe / f`` of them (at most all).
        shortlist: PQ candidates per query re-scored on the re-rank vectors.
        rerank_dtype: How the re-rank vectors are stored: ``sq8`` (1 byte a dim: 1.3 GB at
            1M x 1280), ``float16`` (2.5 GB, memory-mapped) or ``float32``.
        exact_below: A filtered search with at most this many eligible rows is answered exactly
            over their re-rank vectors instead.
        train_per_list: Training rows per list for the coarse k-means (the sample is spread over
            the whole matrix).
        threads: OpenMP threads for building and batched queries; 0 means every usable core.
    """

    nlist: int = 0
    m: int = 0
    nbits: int = 8
    # The first setting past recall@10 0.95 was nprobe 8, shortlist 128 at 100k and 1M
    # (benchmarks/search.py --ann); twice the lists, for margin, cost ~0.1-0.3 ms more.
    nprobe: int = 16
    shortlist: int = 128
    rerank_dtype: AnnDtype | str = AnnDtype.SQ8
    exact_below: int = 4_096
    train_per_list: int = 32
    threads: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rerank_dtype", _enum(AnnDtype, self.rerank_dtype, "rerank_dtype"))
        for name, low in (("nlist", 0), ("m", 0), ("nbits", 1), ("nprobe", 1), ("shortlist", 1),
                          ("exact_below", 0), ("train_per_list", 1), ("threads", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}. Received: {name}={value!r}")
        if self.nbits > 16:
            raise ValueError(f"`nbits` must be at most 16. Received: nbits={self.nbits}")

    @property
    def ef_search(self) -> int:
        """The width :meth:`imgsim.index.hnsw.AnnIndex.search` widens under a filter: here ``nprobe``."""
        return self.nprobe

    def lists_for(self, n_rows: int) -> int:
        """``nlist`` for an index built over ``n_rows`` rows."""
        if self.nlist:
            return max(1, min(self.nlist, n_rows))
        wanted = 2 ** round(math.log2(max(1.0, 2 * math.sqrt(n_rows))))
        return int(max(1, min(wanted, n_rows // 32)))

    def subquantizers(self, dim: int) -> int:
        """``m`` for vectors of ``dim`` dims.

        Raises:
            ValueError: ``m`` is set and does not divide ``dim``.
        """
        if self.m:
            if dim % self.m:
                raise ValueError(f"`m` must divide the embeddings' dim {dim}. Received: m={self.m}")
            return self.m
        divisors = [d for d in range(1, dim + 1) if dim % d == 0]
        return min(divisors, key=lambda d: (abs(d - dim / 20), d))

    def to_json(self) -> dict[str, Any]:
        """The fields as plain JSON values."""
        return {f.name: str(v) if isinstance(v, AnnDtype) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}


def save(index: Any, directory: str | os.PathLike) -> Path:
    """Writes an :class:`imgsim.index.ivfpq.IvfPqIndex` as a directory, atomically.

    Returns:
        The directory.
    """
    import faiss

    directory = Path(directory)
    manifest = {
        "kind": KIND, "format_version": FORMAT_VERSION, "library": LIBRARY,
        "library_version": faiss.__version__,
        "index_type": f"IndexIVFPQ (nlist {index.nlist}, PQ{index.code_size}), re-ranked on "
                      f"{index.config.rerank_dtype}",
        "config": index.config.to_json(), "metric": str(index.metric), "count": index.size,
        "nodes": int(index._index.ntotal), "dim": index.dim, "fingerprint": index.fingerprint,
        "build_id": index.build_id, "created": now_iso(), "library_versions": library_versions(),
    }
    with atomic_directory(directory) as tmp:
        faiss.write_index(index._index.ivf, str(tmp / "index.faiss"))
        faiss.write_index(index._vectors, str(tmp / "vectors.faiss"))
        np.save(tmp / "rows.npy", index._rows_of, allow_pickle=False)
        np.save(tmp / "digests.npy", index._digests, allow_pickle=False)
        write_json_atomic(tmp / "manifest.json", manifest)
    return directory


def load(directory: str | os.PathLike, embeddings: np.ndarray | None, *, mmap: bool = True,
         threads: int | None = None) -> dict[str, Any]:
    """Reads an index saved by :func:`save` and checks it against the embeddings it serves.

    Args:
        directory: The index directory.
        embeddings: ``(N, dim)``: the store's matrix now; its fingerprint must equal the saved
            one. ``None`` loads it unchecked (to bring it up to date in place).
        mmap: Memory-map the re-rank vectors (read-only: such an index cannot take ``add``).
        threads: OpenMP threads (default: the saved config's).

    Returns:
        The parts :class:`imgsim.index.ivfpq.IvfPqIndex` is made of (its constructor's arguments).

    Raises:
        ArtifactError: Nothing loadable there, or damaged files.
        AnnMismatchError: Another format or library, or built for other embeddings.
    """
    import faiss

    directory = Path(directory)
    manifest = read_manifest(directory, KIND)
    rebuild = "build the index again"
    check_manifest(manifest, f"IVF-PQ index {directory}", FORMAT_VERSION, embeddings, rebuild)
    try:
        config = IvfPqConfig(**manifest["config"])
        if threads is not None:
            config = dataclasses.replace(config, threads=threads)
        metric = Metric(manifest["metric"])
        set_threads(config.threads)
        index = faiss.read_index(str(directory / "index.faiss"))
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        vectors = faiss.read_index(str(directory / "vectors.faiss"), flags)
        rows_of = np.load(directory / "rows.npy", allow_pickle=False)
        digests = np.load(directory / "digests.npy", allow_pickle=False)
    except (KeyError, TypeError, ValueError, OSError, RuntimeError) as err:
        raise ArtifactError(f"IVF-PQ index {directory} is damaged: {err}; {rebuild}") from err
    if (not isinstance(index, faiss.IndexIVFPQ) or not isinstance(vectors, faiss.IndexFlatCodes)
            or index.ntotal != len(rows_of) or index.ntotal != manifest.get("nodes")
            or vectors.ntotal != index.ntotal or len(digests) != manifest["count"]
            or index.d != manifest["dim"] or vectors.d != manifest["dim"]):
        raise ArtifactError(f"IVF-PQ index {directory} is damaged: its files disagree with its manifest; {rebuild}")
    return {"index": index, "metric": metric, "config": config, "rows_of": rows_of.astype(np.int64),
            "digests": digests.astype(np.uint64), "vectors": vectors, "build_id": manifest.get("build_id"),
            "mapped": mmap}
