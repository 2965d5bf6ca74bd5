"""Every "k nearest rows" answer behind one protocol: exact, IVF-PQ, HNSW and Milvus.

:class:`SearchBackend` is the protocol (search, region search, describe, close), :class:`Filter`
the one filter value every backend takes, :class:`Hits` the one answer. The factory
(:mod:`imgsim.index.factory`) reads a catalogue's ``backend.json`` once and opens the backend
that serves each approach's store.
"""

from imgsim.index.backend import (
    NO_FILTER,
    BackendError,
    Filter,
    Hits,
    Metric,
    Opening,
    SearchBackend,
    StaleBackendError,
    merge_region_hits,
)

__all__ = ["NO_FILTER", "BackendError", "Filter", "Hits", "Metric", "Opening", "SearchBackend", "StaleBackendError",
           "merge_region_hits"]
