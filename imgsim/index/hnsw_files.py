"""An HNSW index on disk: a directory written atomically, refused when it indexes other embeddings.

The directory::

    manifest.json   kind "ann_index": format version, library and version, index type and
                    parameters, metric, count, dim, fingerprint of the embeddings it indexes
    index.faiss     the FAISS HNSW graph in FAISS's own binary format
    vectors.faiss   with ``graph_dims``: the stored vectors (flat), the graph links projections
    projection.npy  with ``graph_dims``: (dim, graph_dims) float32 PCA directions
    rows.npy        (ntotal,) int64: the store row of each graph node, -1 for a tombstone
    digests.npy     (count,) uint64: a hash of each indexed row, in row order

:meth:`AnnIndex.save <imgsim.index.hnsw.AnnIndex.save>` and ``load`` call :func:`save` and
:func:`load`; loading refuses an index whose fingerprint differs from the embeddings it is handed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.index.exact import Metric
from imgsim.index.hnsw_config import AnnConfig, embeddings_fingerprint, set_threads
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


class AnnMismatchError(ArtifactError):
    """An ANN index was built for other embeddings, or by another library or format."""


def save(ann: Any, directory: str | os.PathLike) -> Path:
    """Writes ``ann`` as a directory, atomically (see :mod:`imgsim.index.hnsw`).

    Args:
        ann: The :class:`imgsim.index.hnsw.AnnIndex` (this module sits below it, so it is not named
            in the signature).
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
        "index_type": type(ann._index).__name__ + (
            f" on PCA-{ann._projection.shape[1]}, re-ranked on {type(ann._vectors).__name__}"
            if ann._projection is not None else ""),
        "config": ann.config.to_json(),
        "metric": str(ann.metric),
        "count": ann.size,
        "nodes": int(ann._index.ntotal),
        "dim": ann.dim,
        "fingerprint": ann.fingerprint,
        "build_id": ann.build_id,
        "created": now_iso(),
        "library_versions": library_versions(),
    }
    with atomic_directory(directory) as tmp:
        faiss.write_index(ann._index, str(tmp / "index.faiss"))
        if ann._projection is not None:
            faiss.write_index(ann._vectors, str(tmp / "vectors.faiss"))
            np.save(tmp / "projection.npy", ann._projection, allow_pickle=False)
        np.save(tmp / "rows.npy", ann._rows_of, allow_pickle=False)
        np.save(tmp / "digests.npy", ann._digests, allow_pickle=False)
        write_json_atomic(tmp / "manifest.json", manifest)
    return directory


def load(directory: str | os.PathLike, embeddings: np.ndarray | None, *,
         threads: int | None = None) -> dict[str, Any]:
    """Reads an index saved by :func:`save` and checks it against the embeddings it serves.

    Args:
        directory: The index directory.
        embeddings: ``(N, dim)``: the store's matrix now. Its fingerprint must equal the one
            the index was saved with. ``None`` loads the index as saved, unchecked (to update it
            in place with :meth:`AnnIndex.follow <imgsim.index.hnsw.AnnIndex.follow>`).
        threads: OpenMP threads (default: the saved config's).

    Returns:
        The parts :class:`AnnIndex` is made of (its constructor's arguments).

    Raises:
        ArtifactError: Nothing loadable there.
        AnnMismatchError: Another format or library, or built for other embeddings (the
            message says which, and to rebuild).
    """
    import faiss

    directory = Path(directory)
    manifest = read_manifest(directory, KIND)
    rebuild = "rebuild it with AnnIndex.build"
    check_manifest(manifest, f"ANN index {directory}", FORMAT_VERSION, embeddings, rebuild)
    try:
        # "kind" was always "hnsw" and is no longer a setting; older indexes still record it.
        config = AnnConfig(**{k: v for k, v in manifest["config"].items() if k != "kind"})
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
    return {"index": index, "metric": metric, "config": config, "rows_of": rows_of.astype(np.int64),
            "digests": digests.astype(np.uint64), "vectors": vectors, "projection": projection,
            "build_id": manifest.get("build_id")}


def check_manifest(manifest: dict[str, Any], what: str, format_version: int, embeddings: np.ndarray | None,
                   rebuild: str) -> None:
    """Refuses a saved FAISS index of another format or library, or one built for other embeddings.

    Args:
        manifest: The index's manifest.
        what: The index in words, with its directory (starts each message).
        format_version: The format this code reads.
        embeddings: The store's matrix now, or None to skip the embeddings checks.
        rebuild: What to do about it (ends each message).

    Raises:
        AnnMismatchError: Saying which, and ``rebuild``.
    """
    if manifest.get("format_version") != format_version or manifest.get("library") != LIBRARY:
        raise AnnMismatchError(
            f"{what} has format {manifest.get('format_version')} by {manifest.get('library')}; "
            f"expected format {format_version} by {LIBRARY}; {rebuild}")
    if embeddings is None:
        return
    shape = tuple(embeddings.shape)
    if shape != (manifest.get("count"), manifest.get("dim")):
        raise AnnMismatchError(f"{what} indexes {manifest.get('count')} rows of dim {manifest.get('dim')}, "
                               f"but the embeddings have shape {shape}; {rebuild}")
    if embeddings_fingerprint(embeddings) != manifest.get("fingerprint"):
        raise AnnMismatchError(f"{what} was built for other embeddings of the same shape {shape}; {rebuild}")
