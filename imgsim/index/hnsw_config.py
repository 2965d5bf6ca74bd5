"""How an HNSW index is built and searched, its threads, FAISS storage, and the fingerprint of what it indexes.

The structure is always an HNSW graph (it needs no training and takes additions), so the
configuration names no index kind; an index saved when it did (``"kind": "hnsw"``) still loads.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
from typing import Any

import numpy as np


class AnnDtype(enum.StrEnum):
    """How vectors are stored in the graph: 4, 2 or 1 byte(s) a dimension."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    SQ8 = "sq8"


@dataclasses.dataclass(frozen=True)
class AnnConfig:
    """How an approximate index is built and searched.

    Attributes:
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


def faiss_storage(index: Any) -> Any:
    """The flat storage behind a FAISS HNSW index."""
    import faiss

    return faiss.downcast_index(index.storage)


def flat_index(dim: int, dtype: AnnDtype, faiss_metric: int) -> Any:
    """A flat FAISS index storing vectors as ``dtype``."""
    import faiss

    if dtype is AnnDtype.FLOAT32:
        return faiss.IndexFlat(dim, faiss_metric)
    qtype = faiss.ScalarQuantizer.QT_fp16 if dtype is AnnDtype.FLOAT16 else faiss.ScalarQuantizer.QT_8bit
    return faiss.IndexScalarQuantizer(dim, qtype, faiss_metric)
