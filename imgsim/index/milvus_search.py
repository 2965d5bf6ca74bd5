"""A Milvus collection as an engine's search backend, and the export that fills it.

The catalogue's ``backend.json`` names the Milvus URI and the approaches exported there
(``{"kind": "milvus", "uri": ..., "approaches": [...]}``); :func:`open_backend` opens one
collection per approach, and :func:`export` (re)creates them from the stores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from imgsim.index.backend import NO_FILTER, Filter, Hits, Metric, Opening, SearchBackend, check_k
from imgsim.index.conditions import conditions_mask
from imgsim.index.exact import Index
from imgsim.index.milvus import MilvusBackend
from imgsim.index.milvus_names import collection_name, hits_rows, resolve_uri
from imgsim.ingest.catalog import Catalog
from imgsim.storage.stores import Store

#: A condition keeping at most this many rows is answered exactly (see :meth:`MilvusSearchBackend._exact`).
EXACT_BELOW = 1_024


class MilvusSearchBackend(SearchBackend):
    """One approach's collection, searched with filters pushed into Milvus.

    Args:
        uri: The Milvus location as ``backend.json`` records it (a Milvus Lite ``.db`` path or a
            server URL).
        collection: The collection (alias) name.
        items: The catalogue's items, row-aligned with its stores: hits are mapped to rows by id
            (an id Milvus has and the catalogue does not is dropped).
        metric: The store's metric.
        expect: Returns the fields the collection must have been exported with (the query
            model's identity); checked before the first search.
    """

    def __init__(self, uri: str, collection: str, items: pd.DataFrame, metric: Metric | str,
                 expect: Callable[[], dict[str, Any]] | None = None) -> None:
        self.uri = uri
        self.collection = collection
        self.items = items
        self.metric = Metric(metric)
        self._ids = items["id"].astype(str).to_numpy()
        self._expect = expect
        self._client = MilvusBackend(uri)

    def search(self, queries: np.ndarray, k: int, *, filter: Filter = NO_FILTER) -> Hits:
        """The ``k`` nearest rows to each query, asked of Milvus (see :meth:`SearchBackend.search`).

        Raises:
            MilvusBackendError: No such collection, or Milvus refused the search.
            StoreMismatchError: The collection was exported with another model.
        """
        check_k(k)
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        filter.mask(self.items)  # an unknown category or column is an error here too, not an empty answer
        if self._expect is not None:
            self._client.check(self.collection, self._expect())
            self._expect = None
        excluded = [str(self._ids[r]) for r in filter.exclude_rows if r < len(self._ids)]
        included = None
        if filter.where:
            # The collection stores id, category and label only: conditions on any other column
            # are resolved by the catalogue to ids, sent as the shorter of "id in" and "id not in".
            passing = conditions_mask(filter.where, self.items)
            if not passing.any():
                return Hits(np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32))
            if passing.sum() <= EXACT_BELOW:
                return self._exact(queries, k, filter, passing)
            if passing.sum() <= (~passing).sum():
                included = self._ids[passing].tolist()
            else:
                excluded = list(dict.fromkeys(excluded + self._ids[~passing].tolist()))
        found = self._client.search(self.collection, queries, k, category=filter.category,
                                    exclude_ids=excluded or None, include_ids=included)
        rows, scores = hits_rows(found, self._ids, self.metric.value)
        # Hits are rectangular: as many columns as the shortest answer (they differ only when
        # Milvus holds ids this catalogue no longer has).
        width = min((len(r) for r in rows), default=0)
        return Hits(np.array([r[:width] for r in rows], dtype=np.int64).reshape(len(rows), width),
                    np.array([s[:width] for s in scores], dtype=np.float32).reshape(len(rows), width))

    def _exact(self, queries: np.ndarray, k: int, filter: Filter, passing: np.ndarray) -> Hits:
        """A narrow filter answered exactly over the passing rows' vectors, fetched from Milvus.

        Milvus's graph search under a filter keeping a handful of rows returns fewer than ``k``
        (5 of 7 on the congruence store), as a graph walk does; HNSW falls back the same way.
        """
        mask = passing & filter.mask(self.items) if filter.category is not None else passing.copy()
        mask[[r for r in filter.exclude_rows if r < len(mask)]] = False
        rows = np.flatnonzero(mask)
        fetched = self._client.vectors(self.collection, self._ids[rows].tolist())
        rows = np.array([r for r in rows if self._ids[r] in fetched], dtype=np.int64)
        if len(rows) == 0:
            return Hits(np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32))
        found = Index(np.stack([fetched[self._ids[r]] for r in rows]), self.metric).search(queries, k)
        return Hits(rows[found.rows], found.scores)

    def describe(self) -> str:
        """``milvus (URI)``."""
        return f"milvus ({self.uri})"

    def close(self) -> None:
        """Closes the connection (the last one to an embedded Milvus Lite file stops its server)."""
        self._client.close()


def accepts(uri: str) -> bool:
    """Whether ``uri`` is a Milvus location: a ``.db`` path (Milvus Lite) or a server URL."""
    try:
        resolve_uri(uri)
    except ValueError:
        return False
    return True


def open_backend(opening: Opening) -> MilvusSearchBackend | None:
    """The approach's collection when ``backend.json`` says Milvus serves it, else None.

    A metric other than the store's is answered locally (Milvus indexed the store's).
    """
    if opening.record.get("kind") != "milvus" or not opening.served_remotely:
        return None
    if opening.metric is not opening.store_metric:
        return None
    return MilvusSearchBackend(opening.record["uri"], collection_name(opening.catalog.name, opening.approach),
                               opening.items, opening.metric, opening.model_spec)


def export(catalog: Catalog, uri: str, stores: dict[str, Store], log: Callable[[str], None]) -> None:
    """(Re)creates one collection per store at ``uri``, each swapped in atomically for readers."""
    with MilvusBackend(uri) as client:
        for approach, store in stores.items():
            rows = client.export_store(catalog, store, approach)
            log(f"{approach}: {rows} rows exported to {client.uri}")
