"""A Milvus collection as an engine's search backend, and the export that fills it.

The catalogue's ``backend.json`` names the Milvus URI and the approaches exported there
(``{"kind": "milvus", "uri": ..., "approaches": [...]}``); :func:`open_backend` opens one
collection per approach, and :func:`export` (re)creates them from the stores; after an add or
remove, :func:`update` upserts the changed rows and deletes the removed ones in the same
collection. A collection is served only to the catalogue its record names (by identity, see
:attr:`imgsim.ingest.catalog.Catalog.identity`) and only while it holds that catalogue's items as
they are now (the record's catalogue fingerprint); otherwise opening it is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from imgsim.index.backend import (
    NO_FILTER,
    Filter,
    Hits,
    Metric,
    Opening,
    SearchBackend,
    StaleBackendError,
    check_k,
)
from imgsim.index.conditions import conditions_mask
from imgsim.index.exact import Index
from imgsim.index.milvus import MilvusBackend, MilvusBackendError
from imgsim.index.milvus_names import catalog_collection, hits_rows, resolve_uri, text_value
from imgsim.ingest.catalog import Catalog
from imgsim.storage.artifacts import now_iso
from imgsim.storage.stores import MODEL_FIELDS, Store, row_keys


class StaleCollectionError(MilvusBackendError, StaleBackendError):
    """A collection holds an earlier state of its catalogue (items added or removed since)."""


def check_serves(record: dict[str, Any], catalog: Catalog, collection: str, uri: str) -> None:
    """Refuses a collection whose record names another catalogue, or an earlier state of this one.

    Raises:
        MilvusBackendError: The record names another catalogue (same name elsewhere, or a copy).
        StaleCollectionError: It holds the catalogue as it was before its last change.
    """
    if record.get("catalog_identity") != catalog.identity:
        raise MilvusBackendError(
            f"Milvus collection {collection} at {uri} holds another catalogue named "
            f"{record.get('catalog', '?')!r} (from another folder), not this {catalog.name!r}; it is not "
            "served: export this catalogue there again")
    if record.get("catalog_fingerprint") != catalog.fingerprint:
        raise StaleCollectionError(
            f"Milvus collection {collection} at {uri} is stale: it holds catalogue {catalog.name!r} as it "
            f"was ({record.get('exported_count', '?')} items), not as it is now ({len(catalog.ok)} items); "
            "a refresh brings it up to date")

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
        catalog: If given, the collection must hold this catalogue as it is now (see
            :func:`check_serves`); checked on opening.

    Raises:
        MilvusBackendError: The collection holds another catalogue; :class:`StaleCollectionError`
            when it holds an earlier state of this one.
    """

    def __init__(self, uri: str, collection: str, items: pd.DataFrame, metric: Metric | str,
                 expect: Callable[[], dict[str, Any]] | None = None, catalog: Catalog | None = None) -> None:
        self.uri = uri
        self.collection = collection
        self.items = items
        self.metric = Metric(metric)
        self._ids = items["id"].astype(str).to_numpy()
        self._expect = expect
        self._client = MilvusBackend(uri)
        if catalog is not None:
            try:
                check_serves(self._client.manifest(collection), catalog, collection, self._client.uri)
            except BaseException:
                self._client.close()
                raise

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
    return MilvusSearchBackend(opening.record["uri"], catalog_collection(opening.catalog, opening.approach),
                               opening.items, opening.metric, opening.model_spec, opening.catalog)


def export(catalog: Catalog, uri: str, stores: dict[str, Store], log: Callable[[str], None]) -> None:
    """(Re)creates one collection per store at ``uri``, each swapped in atomically for readers."""
    with MilvusBackend(uri) as client:
        for approach, store in stores.items():
            rows = client.export_store(catalog, store, approach)
            log(f"{approach}: {rows} rows exported to {client.uri}")


def update(catalog: Catalog, uri: str, stores: dict[str, Store], before: dict[str, tuple[str | None, Any]],
           log: Callable[[str], None]) -> None:
    """Brings each approach's collection in step with its store by the changed rows only.

    New and changed rows (by ``id<TAB>content hash`` key) are upserted, then removed ids deleted,
    then the record names the catalogue's new state; the collection keeps its physical name. A
    collection that does not hold ``before``'s state (missing, another model, a refresh that
    stopped half-way) is exported again instead.

    Args:
        catalog: The catalogue as it is now.
        uri: The Milvus location.
        stores: ``{approach: Store}``, current for ``catalog``.
        before: Per approach, the catalogue fingerprint and row keys of the store the collection
            was last filled from (:func:`imgsim.storage.stores.store_keys`).
        log: Progress lines.

    Raises:
        MilvusBackendError: A collection of this name holds another catalogue.
    """
    with MilvusBackend(uri) as client:
        for approach, store in stores.items():
            name = catalog_collection(catalog, approach)
            fingerprint, old_keys = before.get(approach, (None, ()))
            record = client.manifest(name) if client.has(name) else None
            if record is not None and record.get("catalog_identity") != catalog.identity:
                check_serves(record, catalog, name, client.uri)
            if (record is None or fingerprint is None or record.get("catalog_fingerprint") != fingerprint
                    or any(record.get(f) != store.manifest.get(f) for f in MODEL_FIELDS)):
                rows = client.export_store(catalog, store, approach)
                log(f"{approach}: {rows} rows exported to {client.uri}")
                continue
            upserted, deleted = _apply_changes(client, name, catalog, store, old_keys)
            if client.count(name) != len(catalog.ok):  # not what the keys said: start again
                rows = client.export_store(catalog, store, approach)
                log(f"{approach}: {rows} rows exported to {client.uri} (it held other rows)")
                continue
            client.set_record(name, {**record, "catalog_fingerprint": catalog.fingerprint,
                                     "exported_count": len(catalog.ok), "updated": now_iso()})
            log(f"{approach}: {upserted} rows upserted, {deleted} deleted at {client.uri}")


def _apply_changes(client: MilvusBackend, name: str, catalog: Catalog, store: Store,
                   old_keys: Any) -> tuple[int, int]:
    """Upserts the rows whose key is new, then deletes the ids no longer there; returns both counts."""
    ok = catalog.ok
    keys, old = row_keys(catalog).tolist(), set(np.asarray(old_keys, dtype=str).tolist())
    changed = [row for row, key in enumerate(keys) if key not in old]
    ids = ok["id"].astype(str)
    if changed:
        column = {c: [text_value(v) for v in (ok[c].iloc[changed] if c in ok else [""] * len(changed))]
                  for c in ("category", "label")}
        client.upsert(name, ids.iloc[changed].tolist(), np.asarray(store.embeddings[changed]),
                      column["category"], column["label"])
    gone = sorted({k.split("\t", 1)[0] for k in old} - set(ids))
    if gone:
        client.delete(name, gone)
    return len(changed), len(gone)
