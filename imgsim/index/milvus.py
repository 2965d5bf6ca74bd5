"""Milvus as a vector backend: one collection per (catalogue, approach), queried like a store.

The same code talks to Milvus Lite embedded in this process (``uri`` is a local path ending in
``.db``; the path is a directory) and to a Milvus server or cluster (``http://host:19530``), through
``pymilvus.MilvusClient``.

A collection holds, per item: ``id`` (VARCHAR primary key), ``vector`` (FLOAT_VECTOR), ``category``
and ``label`` (VARCHAR, filterable). What the vectors were made with (approach, model, fingerprint,
options, dim, image size, metric) is kept in the collection's properties as JSON, so a query with
another model is refused, as :meth:`imgsim.storage.stores.Store.load` refuses a stale store.

An export is atomic for readers: rows go into a new versioned collection (``<name>_v<ms>``) that
is indexed and loaded, then the alias ``<name>`` is switched to it and the previous version is
dropped. Searches, upserts and deletes use the alias, so a crash mid-export leaves the previous
version queryable.

HNSW parameters come from measured recall@10 against exact search (``benchmarks/milvus_recall.py``,
Milvus Lite 3.2.2, one OpenMP thread): ``M=16, efConstruction=200, ef=128``. On 5,000 1,280-d
vectors (1,000 real EfficientNet-Lite0 embeddings of catalogue photos plus noisy copies; 200
held-out photos as queries) recall@10 was 0.974 / 0.991 / 0.9975 / 0.9975 at ef 16 / 32 / 64 / 128,
and 0.950 / 0.987 / 0.9985 / 0.9995 with a category filter (a third of the rows); on the tests'
300 16-d vectors 1.0 from ef=32. M=8 gave 0.9915 / 0.995 at ef 64 / 128 (filtered 0.990 / 0.9975);
M=32 no more than M=16 (0.9965 / 0.997) for a bigger graph. Latency hardly changes with ef at this
size (p50 5-8 ms with the 2 cores shared, most of it gRPC), so ef=128 buys the filtered recall. Hard
data needs more: on uniform random 128-d vectors ef=64 gave only 0.81; measure again for another
model or size.

Filters are pushed down as Milvus expressions built from escaped string literals (never by
pasting user text into an expression; see :mod:`imgsim.index.milvus_names`). Every error Milvus
raises comes out as :class:`MilvusBackendError` with Milvus's own message.
:mod:`imgsim.index.milvus_search` is a collection as an engine's search backend.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.index.backend import BackendError
from imgsim.index.milvus_names import (  # noqa: F401 (names, expressions and URIs, re-exported)
    COLLECTION_NOT_LOADED,
    DEFAULT_EF,
    FORMAT_VERSION,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    ID_FIELD,
    INSERT_BATCH,
    KIND,
    MAX_ID_BYTES,
    MAX_K,
    MAX_NAME,
    MAX_TEXT_BYTES,
    METRICS,
    PROPERTY,
    TEXT_FIELDS,
    VECTOR_FIELD,
    VERSION_SUFFIX,
    catalog_collection,
    check_name,
    check_rows,
    collection_manifest,
    collection_name,
    filter_expression,
    hits_rows,
    insert_rows,
    quote,
    resolve_uri,
    text_value,
)
from imgsim.ingest.catalog import Catalog
from imgsim.storage.stores import Store, StoreMismatchError

# Embedded servers are per path and per process: close the last backend, release the server.
_EMBEDDED_USERS: dict[str, int] = {}
_EMBEDDED_LOCK = threading.Lock()


class MilvusBackendError(BackendError):
    """A Milvus collection cannot be used as asked, or Milvus refused a call; the message says why.

    Attributes:
        code: Milvus's error code, when Milvus raised it (None otherwise).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class _Client:
    """A ``pymilvus.MilvusClient`` whose errors are :class:`MilvusBackendError` (imgsim's own)."""

    def __init__(self, uri: str, timeout: float) -> None:
        self._uri = uri
        from pymilvus import MilvusClient

        self._client = self._call("connect", MilvusClient, uri=uri, timeout=timeout)

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from pymilvus.exceptions import MilvusException

        try:
            return call(*args, **kwargs)
        except MilvusException as err:
            message = getattr(err, "message", None) or str(err)
            raise MilvusBackendError(f"Milvus at {self._uri} ({what}): {message}",
                                     code=getattr(err, "code", None)) from err

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._call(name, attr, *args, **kwargs)


class MilvusBackend:
    """Vector search through Milvus: Milvus Lite embedded or a Milvus server, the same code.

    Args:
        uri: A local path ending in ``.db`` (Milvus Lite embedded; a directory, created if
            needed) or ``http://host:port`` of a Milvus server or cluster.
        ef: HNSW search breadth; default: the ``ef`` recorded at export, else :data:`DEFAULT_EF`.
            Raised to ``k`` when a query asks for more.
        omp_threads: For embedded Milvus only, the OpenMP threads FAISS may use in this process
            (a process-wide FAISS setting). ``None``: 1 unless ``OMP_NUM_THREADS`` is set.
        timeout: Seconds each call to Milvus may take.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, uri: str, *, ef: int | None = None, omp_threads: int | None = None,
                 timeout: float = 60.0) -> None:
        if ef is not None and ef < 1:
            raise ValueError(f"`ef` must be >= 1. Received: ef={ef}")
        self.uri, self.embedded = resolve_uri(uri)
        self.ef = ef
        self.timeout = timeout
        self._loaded: set[str] = set()
        self._manifests: dict[str, dict[str, Any]] = {}
        self._dims: dict[str, int] = {}
        if self.embedded:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            _limit_faiss_threads(omp_threads)
        self._client = _Client(self.uri, timeout)
        if self.embedded:
            with _EMBEDDED_LOCK:
                _EMBEDDED_USERS[self.uri] = _EMBEDDED_USERS.get(self.uri, 0) + 1
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; the last backend on an embedded path also stops its server."""
        if self._closed:
            return
        self._closed = True
        self._client.close()
        if self.embedded:
            with _EMBEDDED_LOCK:
                left = _EMBEDDED_USERS.get(self.uri, 1) - 1
                if left <= 0:
                    _EMBEDDED_USERS.pop(self.uri, None)
                else:
                    _EMBEDDED_USERS[self.uri] = left
            if left <= 0:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)

    def __enter__(self) -> MilvusBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names and metadata -----------------------------------------------------------------------

    collection_name = staticmethod(collection_name)

    def has(self, collection: str) -> bool:
        """Whether ``collection`` (an exported catalogue/approach) exists."""
        return bool(self._client.has_collection(check_name(collection)))

    def manifest(self, collection: str) -> dict[str, Any]:
        """The record written at export (model identity, metric, index settings).

        Raises:
            MilvusBackendError: No such collection, or it was not written by imgsim.
        """
        check_name(collection)
        if collection not in self._manifests:
            if not self.has(collection):
                raise MilvusBackendError(f"no Milvus collection {collection} at {self.uri}: the catalogue "
                                         "was not exported there, or the collection was dropped; export it again")
            described = self._client.describe_collection(collection)
            raw = (described.get("properties") or {}).get(PROPERTY)
            try:
                manifest = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                manifest = None
            if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
                raise MilvusBackendError(f"Milvus collection {collection} has no imgsim record; re-export it")
            if manifest.get("format_version") != FORMAT_VERSION:
                raise MilvusBackendError(f"Milvus collection {collection} has format "
                                         f"{manifest.get('format_version')}, expected {FORMAT_VERSION}; re-export it")
            self._manifests[collection] = manifest
        return self._manifests[collection]

    def check(self, collection: str, expect: dict[str, Any]) -> None:
        """Refuses a collection made with another model.

        Args:
            collection: The collection (alias) name.
            expect: Fields that must match, e.g. :func:`imgsim.storage.stores.model_spec` of the query model.

        Raises:
            StoreMismatchError: A field differs; the message names it.
        """
        manifest = self.manifest(collection)
        for field, value in expect.items():
            if manifest.get(field) != value:
                raise StoreMismatchError(
                    f"Milvus collection {collection} was exported with {field}={manifest.get(field)!r} but "
                    f"the model now has {field}={value!r}; export catalogue "
                    f"{manifest.get('catalog', '?')!r} to {self.uri} again"
                )

    def set_record(self, collection: str, manifest: dict[str, Any]) -> None:
        """Replaces the record kept in ``collection``'s properties (after an upsert or delete)."""
        self.manifest(collection)  # one of imgsim's, or refused
        self._client.alter_collection_properties(check_name(collection),
                                                 properties={PROPERTY: json.dumps(manifest, sort_keys=True)})
        self._manifests[collection] = manifest

    def count(self, collection: str) -> int:
        """Number of live rows (deleted ones not counted)."""
        rows = self._loaded_call(collection, lambda: self._client.query(
            collection, filter="", output_fields=["count(*)"], consistency_level="Strong"))
        return int(rows[0]["count(*)"])

    def vectors(self, collection: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of ``ids`` (those the collection holds), for an exact answer over a few rows."""
        rows = self._loaded_call(collection, lambda: self._client.query(
            collection, filter=filter_expression(include_ids=list(ids)), output_fields=[VECTOR_FIELD],
            consistency_level="Strong"))
        return {str(r["id"]): np.asarray(r[VECTOR_FIELD], np.float32) for r in rows}

    # -- writing ----------------------------------------------------------------------------------

    def export_store(self, catalog: Catalog, store: Store, approach: str, *,
                     batch_size: int = INSERT_BATCH, m: int = HNSW_M,
                     ef_construction: int = HNSW_EF_CONSTRUCTION, ef: int | None = None) -> int:
        """(Re)creates the collection of ``(catalog, approach)`` from a store, atomically for readers.

        Args:
            catalog: The catalogue (``catalog.ok`` gives id, category and label of each row).
            store: Its store for ``approach`` (row i = ``catalog.ok`` row i).
            approach: The approach name, part of the collection name.
            batch_size: Rows per insert call.
            m: HNSW graph degree.
            ef_construction: HNSW build breadth.
            ef: Search breadth recorded as the collection's default; default :data:`DEFAULT_EF`.

        Returns:
            Number of rows inserted.

        Raises:
            ValueError: The store does not match the catalogue, or bad parameters.
        """
        if batch_size < 1 or m < 2 or ef_construction < 1 or (ef is not None and ef < 1):
            raise ValueError(f"`batch_size`, `m`, `ef_construction` and `ef` must be positive (m >= 2). "
                             f"Received: batch_size={batch_size}, m={m}, ef_construction={ef_construction}, ef={ef}")
        ok = catalog.ok
        ids = ok["id"].astype(str).tolist()
        if store.embeddings.shape[0] != len(ids) or [str(i) for i in store.ids] != ids:
            raise ValueError(f"`store` must be row-aligned with catalogue {catalog.name} "
                             f"({len(ids)} items). Received: {store.embeddings.shape[0]} rows; rebuild the store")
        metric = store.manifest.get("metric", "cosine")
        if metric not in METRICS:
            raise ValueError(f"store metric must be one of {', '.join(METRICS)}. Received: metric={metric!r}")
        categories = [text_value(v) for v in (ok["category"] if "category" in ok else [""] * len(ids))]
        labels = [text_value(v) for v in (ok["label"] if "label" in ok else [""] * len(ids))]
        index = {"type": "HNSW", "metric": METRICS[metric], "M": m, "efConstruction": ef_construction,
                 "ef": ef or DEFAULT_EF}
        manifest = collection_manifest(store, catalog, index=index)
        return self.export_arrays(catalog_collection(catalog, approach), ids, store.embeddings, categories,
                                  labels, manifest=manifest, batch_size=batch_size)

    def export_arrays(self, collection: str, ids: Sequence[str], vectors: np.ndarray,
                      categories: Sequence[str], labels: Sequence[str], *, manifest: dict[str, Any],
                      batch_size: int = INSERT_BATCH) -> int:
        """(Re)creates ``collection`` from plain arrays; what :meth:`export_store` does after its checks.

        Args:
            collection: The alias readers use.
            ids: ``N`` unique item ids.
            vectors: ``(N, dim)`` float.
            categories: ``N`` categories.
            labels: ``N`` labels.
            manifest: The record to keep (must have ``metric``, ``dim`` and ``index``:
                ``{"M", "efConstruction", "ef"}``); see :func:`collection_manifest`.
            batch_size: Rows per insert call.

        Returns:
            Number of rows inserted.
        """
        if len(check_name(collection)) > MAX_NAME - 20:
            raise ValueError(f"`collection` must be at most {MAX_NAME - 20} characters (a version suffix is added). "
                             f"Received: {len(collection)} characters")
        vectors = check_rows(ids, vectors, categories, labels, dim=int(manifest["dim"]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"`ids` must be unique. Received: {len(ids) - len(set(ids))} duplicates")
        if len(ids) == 0:
            raise ValueError("`ids` must hold at least one item. Received: 0 rows")
        physical = f"{collection}_v{time.time_ns() // 1_000_000}"
        self._create(physical, manifest)
        try:
            for start in range(0, len(ids), batch_size):
                stop = start + batch_size
                self._client.insert(physical, list(insert_rows(ids[start:stop], vectors[start:stop],
                                                         categories[start:stop], labels[start:stop])))
            # Sealed segments get the HNSW index; unflushed rows would be searched by brute force.
            # The index is declared only after the flush and built by the one load: Milvus Lite
            # indexes a loaded collection's new segments on a background thread after each flush,
            # and a load racing that thread read a half-written index file (CI, 2026-12-01).
            self._client.flush(physical)
            self._client.create_index(physical, self._index_params(manifest))
            self._client.load_collection(physical)
            self._switch_alias(collection, physical)
        except BaseException:
            self._drop_quietly(physical)
            raise
        self._manifests.pop(collection, None)
        self._loaded.discard(collection)
        return len(ids)

    def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray, categories: Sequence[str],
               labels: Sequence[str]) -> int:
        """Adds items, or replaces those whose id is already there.

        Args:
            collection: The collection (alias) name.
            ids: ``N`` item ids.
            vectors: ``(N, dim)`` float, made by the collection's model.
            categories: ``N`` categories.
            labels: ``N`` labels.

        Returns:
            ``N``.
        """
        dim = int(self.manifest(collection)["dim"])
        vectors = check_rows(ids, vectors, categories, labels, dim=dim)
        if len(set(ids)) != len(ids):
            raise ValueError(f"`ids` must be unique. Received: {len(ids) - len(set(ids))} duplicates")
        for start in range(0, len(ids), INSERT_BATCH):
            stop = start + INSERT_BATCH
            self._client.upsert(collection, list(insert_rows(ids[start:stop], vectors[start:stop],
                                                       categories[start:stop], labels[start:stop])))
        return len(ids)

    def delete(self, collection: str, ids: Sequence[str]) -> int:
        """Removes items by id (ids not there are ignored).

        Returns:
            How many ids were asked to be deleted.
        """
        self.manifest(collection)
        ids = [str(i) for i in ids]
        for start in range(0, len(ids), INSERT_BATCH):
            chunk = ids[start:start + INSERT_BATCH]
            self._client.delete(collection, filter=f"id in [{', '.join(quote(i) for i in chunk)}]")
        return len(ids)

    # -- reading ----------------------------------------------------------------------------------

    def search(self, collection: str, vectors: np.ndarray, k: int, *, category: str | None = None,
               exclude_ids: Sequence[str] | None = None, include_ids: Sequence[str] | None = None,
               expect: dict[str, Any] | None = None) -> list[list[tuple[str, float]]]:
        """The ``k`` nearest items to each query, filters applied inside Milvus.

        Args:
            collection: The collection (alias) name.
            vectors: ``(Q, dim)`` or ``(dim,)`` queries.
            k: Results per query (fewer when fewer items pass the filter).
            category: Only items of this category.
            exclude_ids: Items left out of every query's results.
            include_ids: If given, only these items (a condition resolved to ids).
            expect: If given, the collection must have been exported with these model fields
                (see :meth:`check`).

        Returns:
            Per query, ``(id, score)`` best first: cosine similarity (higher is closer) for cosine
            collections, euclidean distance (lower is closer) for euclidean ones, as
            :class:`imgsim.index.exact.Index` scores them.

        Raises:
            ValueError: ``k`` out of range or queries of the wrong dim.
            StoreMismatchError: ``expect`` does not match.
        """
        if not 1 <= k <= MAX_K:
            raise ValueError(f"`k` must be in [1, {MAX_K}]. Received: k={k}")
        manifest = self.manifest(collection)
        if expect:
            self.check(collection, expect)
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = int(manifest["dim"])
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise ValueError(f"`vectors` must have shape (Q, {dim}). Received: {np.shape(vectors)}")
        if len(queries) == 0:
            return []
        metric = manifest.get("metric", "cosine")
        ef = max(k, self.ef or int(manifest.get("index", {}).get("ef", DEFAULT_EF)))
        # Euclidean scores are recomputed here: Milvus versions differ on squared or plain L2.
        output = [VECTOR_FIELD] if metric == "euclidean" else []
        expression = filter_expression(category, exclude_ids, include_ids)
        results = self._loaded_call(collection, lambda: self._client.search(
            collection, data=queries.tolist(), limit=k, filter=expression, output_fields=output,
            anns_field=VECTOR_FIELD, consistency_level="Strong",
            search_params={"metric_type": METRICS[metric], "params": {"ef": ef}},
        ))
        out = []
        for q, hits in zip(queries, results):
            if metric == "euclidean":
                pairs = [(str(h["id"]), float(np.linalg.norm(np.asarray(h["entity"][VECTOR_FIELD], np.float32) - q)))
                         for h in hits]
                pairs.sort(key=lambda p: p[1])
            else:
                pairs = [(str(h["id"]), float(h["distance"])) for h in hits]
                pairs.sort(key=lambda p: -p[1])
            out.append(pairs)
        return out

    # -- internals --------------------------------------------------------------------------------

    def _create(self, physical: str, manifest: dict[str, Any]) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=int(manifest["dim"]))
        for field in TEXT_FIELDS:
            schema.add_field(field, DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        # No index yet, so the collection stays released (unloaded) while rows go in.
        self._client.create_collection(physical, schema=schema, consistency_level="Strong",
                                       properties={PROPERTY: json.dumps(manifest, sort_keys=True)})

    def _index_params(self, manifest: dict[str, Any]) -> Any:
        index = manifest["index"]
        params = self._client.prepare_index_params()
        # Build parameters go nested under "params": a Milvus server expands that key, and Milvus
        # Lite 3.2 reads only it (given flat, as pymilvus sends them, M and efConstruction are lost).
        build = {"M": int(index["M"]), "efConstruction": int(index["efConstruction"])}
        params.add_index(VECTOR_FIELD, index_type="HNSW", metric_type=METRICS[manifest["metric"]],
                         params={"params": build})
        return params

    def _switch_alias(self, alias: str, physical: str) -> None:
        if alias in self._client.list_collections():
            raise MilvusBackendError(f"{alias} at {self.uri} is a collection, not an imgsim alias; drop it first")
        # has_collection answers for aliases too: then the alias exists and is switched.
        if self._client.has_collection(alias):
            self._client.alter_alias(physical, alias)
        else:
            self._client.create_alias(physical, alias)
        # Earlier versions, including ones an interrupted export left behind.
        for name in self._client.list_collections():
            if name != physical and re.fullmatch(re.escape(alias) + VERSION_SUFFIX, name):
                self._drop_quietly(name)

    def _drop_quietly(self, physical: str) -> None:
        try:
            self._client.drop_collection(physical)
        except Exception:  # noqa: BLE001 - cleanup must not hide the original error
            pass

    def _loaded_call(self, collection: str, call: Callable[[], Any]) -> Any:
        """Runs a search or query, loading the collection first and again if the server lost it."""
        self._ensure_loaded(collection)
        try:
            return call()
        except Exception as err:
            # Code 101: not loaded (a restarted server, or another client released it).
            if getattr(err, "code", None) != COLLECTION_NOT_LOADED:
                raise
            self._loaded.discard(collection)
            self._ensure_loaded(collection)
            return call()

    def _ensure_loaded(self, collection: str) -> None:
        """After a reopen (or a server restart) a collection must be loaded before search or query."""
        if collection in self._loaded:
            return
        check_name(collection)
        state = self._client.get_load_state(collection).get("state")
        if str(state).rsplit(".", 1)[-1] != "Loaded":
            self._client.load_collection(collection)
        self._loaded.add(collection)


def _limit_faiss_threads(threads: int | None) -> None:
    """Keeps embedded Milvus's FAISS from taking every core (a process-wide FAISS setting)."""
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        threads = 1
    if threads < 1:
        raise ValueError(f"`omp_threads` must be >= 1. Received: omp_threads={threads}")
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(threads)


