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

Filters are pushed down as Milvus expressions built here from escaped string literals (never by
pasting user text into an expression).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.ingest.catalog import Catalog
from imgsim.storage.artifacts import library_versions, now_iso
from imgsim.storage.stores import MODEL_FIELDS, Store, StoreMismatchError

KIND = "milvus_collection"
FORMAT_VERSION = 1
PROPERTY = "imgsim_manifest"
ID_FIELD = "id"
VECTOR_FIELD = "vector"
TEXT_FIELDS = ("category", "label")
# Milvus measures VARCHAR lengths in bytes (UTF-8).
MAX_ID_BYTES = 2048
MAX_TEXT_BYTES = 2048
MAX_NAME = 255
# Milvus refuses a top-k above 16384.
MAX_K = 16384
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
DEFAULT_EF = 128
INSERT_BATCH = 1000
METRICS = {"cosine": "COSINE", "euclidean": "L2"}
# Milvus's error code for a search on a collection that is not loaded.
COLLECTION_NOT_LOADED = 101

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION_RE = r"_v\d+$"
# Control characters that the expression grammar has no escape for in every Milvus version.
_UNESCAPABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Embedded servers are per path and per process: close the last backend, release the server.
_EMBEDDED_USERS: dict[str, int] = {}
_EMBEDDED_LOCK = threading.Lock()


class MilvusBackendError(ImgsimError, RuntimeError):
    """A Milvus collection cannot be used as asked; the message says why."""


def collection_name(catalog_name: str, approach: str) -> str:
    """A valid Milvus collection name for a (catalogue, approach) pair.

    Milvus names allow ``[A-Za-z0-9_]`` only, so other characters become ``_`` and a short hash
    of the original pair keeps ``my-shop`` and ``my_shop`` apart.

    Args:
        catalog_name: The catalogue's name (any text).
        approach: The approach (``pretrained``, ``autoencoder``, ...).

    Returns:
        ``imgsim_<catalog>_<approach>_<hash8>``, at most 200 characters.

    Raises:
        ValueError: An empty catalogue name or approach.
    """
    if not catalog_name or not approach:
        raise ValueError(f"`catalog_name` and `approach` must be non-empty. "
                         f"Received: catalog_name={catalog_name!r}, approach={approach!r}")
    digest = hashlib.sha256(f"{catalog_name}\0{approach}".encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9_]", "_", catalog_name)[:120]
    approach_slug = re.sub(r"[^A-Za-z0-9_]", "_", approach)[:50]
    return f"imgsim_{slug}_{approach_slug}_{digest}"


def check_name(name: str) -> str:
    """Returns ``name`` if Milvus accepts it as a collection name, else raises ``ValueError``."""
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME_RE.match(name):
        raise ValueError(f"`collection` must be a letter or _ then letters, digits or _ "
                         f"(at most {MAX_NAME} characters). Received: collection={name!r}")
    return name


def quote(value: str) -> str:
    """``value`` as a double-quoted Milvus string literal, escaped so it cannot end early.

    Args:
        value: Any text (a category, an id).

    Returns:
        A literal such as ``"shoes \\"sale\\""`` for use in a filter expression.

    Raises:
        ValueError: ``value`` is not a string, or holds a control character other than
            newline, carriage return or tab (the expression grammar cannot escape those).
    """
    if not isinstance(value, str):
        raise ValueError(f"`value` must be a string. Received: value={value!r}")
    if _UNESCAPABLE.search(value):
        raise ValueError(f"`value` must not contain control characters. Received: value={value!r}")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def filter_expression(category: str | None = None, exclude_ids: Sequence[str] | None = None) -> str:
    """The Milvus filter for a category and a list of ids to leave out (``""`` for none).

    Args:
        category: Only rows whose ``category`` equals this.
        exclude_ids: Rows whose ``id`` is one of these are left out.
    """
    parts = []
    if category is not None:
        parts.append(f"category == {quote(category)}")
    if exclude_ids:
        parts.append(f"id not in [{', '.join(quote(str(i)) for i in exclude_ids)}]")
    return " and ".join(f"({p})" for p in parts)


def resolve_uri(uri: str) -> tuple[str, bool]:
    """Normalises a backend location.

    Args:
        uri: ``http(s)://host:port``, ``tcp://host:port``, ``milvus://host:port`` (same as
            ``http``), or a local path ending in ``.db`` for Milvus Lite embedded.

    Returns:
        ``(uri for MilvusClient, embedded)``.

    Raises:
        ValueError: Anything else.
    """
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"`uri` must be a local path ending in .db or http://host:port. Received: uri={uri!r}")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme == "milvus":
        return "http://" + uri.split("://", 1)[1], False
    if scheme in ("http", "https", "tcp"):
        return uri, False
    if scheme:
        raise ValueError(f"`uri` must be a local path ending in .db or http://host:port. Received: uri={uri!r}")
    path = Path(uri).expanduser()
    if path.suffix != ".db":
        raise ValueError(f"`uri` must be a local path ending in .db (Milvus Lite) or http://host:port. "
                         f"Received: uri={uri!r}")
    return str(path.resolve()), True


def collection_manifest(store: Store, catalog: Catalog, *, index: dict[str, Any]) -> dict[str, Any]:
    """The record kept in a collection's properties: the store's model identity and index settings."""
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        **{field: store.manifest.get(field) for field in MODEL_FIELDS},
        "metric": store.manifest.get("metric", "cosine"),
        "catalog": catalog.name,
        "catalog_fingerprint": catalog.fingerprint,
        "exported_count": int(store.embeddings.shape[0]),
        "index": index,
        "created": now_iso(),
        "library_versions": {**library_versions(), **_milvus_versions()},
    }


def _milvus_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("pymilvus", "milvus-lite"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _text(value: Any) -> str:
    """A table cell as a VARCHAR value (missing cells become ``""``)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def _check_bytes(values: Sequence[str], limit: int, what: str) -> None:
    for v in values:
        if len(v.encode("utf-8")) > limit:
            raise ValueError(f"`{what}` values must be at most {limit} bytes in UTF-8. Received: {v[:60]!r}...")


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
        from pymilvus import MilvusClient

        self._client = MilvusClient(uri=self.uri, timeout=timeout)
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
                raise MilvusBackendError(f"no Milvus collection {collection} at {self.uri}; "
                                         "export it with: python -m imgsim export CATALOG --to URI")
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
                    f"the model now has {field}={value!r}; re-export it with: python -m imgsim export "
                    f"{manifest.get('catalog', 'CATALOG')} --to {self.uri}"
                )

    def count(self, collection: str) -> int:
        """Number of live rows (deleted ones not counted)."""
        rows = self._loaded_call(collection, lambda: self._client.query(
            collection, filter="", output_fields=["count(*)"], consistency_level="Strong"))
        return int(rows[0]["count(*)"])

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
        categories = [_text(v) for v in (ok["category"] if "category" in ok else [""] * len(ids))]
        labels = [_text(v) for v in (ok["label"] if "label" in ok else [""] * len(ids))]
        index = {"type": "HNSW", "metric": METRICS[metric], "M": m, "efConstruction": ef_construction,
                 "ef": ef or DEFAULT_EF}
        manifest = collection_manifest(store, catalog, index=index)
        return self.export_arrays(collection_name(catalog.name, approach), ids, store.embeddings, categories,
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
        vectors = self._check_rows(ids, vectors, categories, labels, dim=int(manifest["dim"]))
        if len(set(ids)) != len(ids):
            raise ValueError(f"`ids` must be unique. Received: {len(ids) - len(set(ids))} duplicates")
        if len(ids) == 0:
            raise ValueError("`ids` must hold at least one item. Received: 0 rows")
        physical = f"{collection}_v{time.time_ns() // 1_000_000}"
        self._create(physical, manifest)
        try:
            for start in range(0, len(ids), batch_size):
                stop = start + batch_size
                self._client.insert(physical, list(_rows(ids[start:stop], vectors[start:stop],
                                                         categories[start:stop], labels[start:stop])))
            # Sealed segments get the HNSW index; unflushed rows would be searched by brute force.
            self._client.flush(physical)
            self._client.release_collection(physical)
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
        vectors = self._check_rows(ids, vectors, categories, labels, dim=dim)
        if len(set(ids)) != len(ids):
            raise ValueError(f"`ids` must be unique. Received: {len(ids) - len(set(ids))} duplicates")
        for start in range(0, len(ids), INSERT_BATCH):
            stop = start + INSERT_BATCH
            self._client.upsert(collection, list(_rows(ids[start:stop], vectors[start:stop],
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
               exclude_ids: Sequence[str] | None = None,
               expect: dict[str, Any] | None = None) -> list[list[tuple[str, float]]]:
        """The ``k`` nearest items to each query, filters applied inside Milvus.

        Args:
            collection: The collection (alias) name.
            vectors: ``(Q, dim)`` or ``(dim,)`` queries.
            k: Results per query (fewer when fewer items pass the filter).
            category: Only items of this category.
            exclude_ids: Items left out of every query's results.
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
        expression = filter_expression(category, exclude_ids)
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

    def _check_rows(self, ids: Sequence[str], vectors: np.ndarray, categories: Sequence[str],
                    labels: Sequence[str], *, dim: int) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.shape[0] != len(ids):
            raise ValueError(f"`vectors` must have shape ({len(ids)}, {dim}). Received: {vectors.shape}")
        if len(categories) != len(ids) or len(labels) != len(ids):
            raise ValueError(f"`categories` and `labels` must have one value per id ({len(ids)}). "
                             f"Received: {len(categories)} and {len(labels)}")
        if not np.isfinite(vectors).all():
            raise ValueError("`vectors` must be finite. Received: NaN or infinity")
        _check_bytes([str(i) for i in ids], MAX_ID_BYTES, "ids")
        _check_bytes([_text(c) for c in categories], MAX_TEXT_BYTES, "categories")
        _check_bytes([_text(v) for v in labels], MAX_TEXT_BYTES, "labels")
        return vectors

    def _create(self, physical: str, manifest: dict[str, Any]) -> None:
        from pymilvus import DataType, MilvusClient

        index = manifest["index"]
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=int(manifest["dim"]))
        for field in TEXT_FIELDS:
            schema.add_field(field, DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        params = self._client.prepare_index_params()
        # Build parameters go nested under "params": a Milvus server expands that key, and Milvus
        # Lite 3.2 reads only it (given flat, as pymilvus sends them, M and efConstruction are lost).
        build = {"M": int(index["M"]), "efConstruction": int(index["efConstruction"])}
        params.add_index(VECTOR_FIELD, index_type="HNSW", metric_type=METRICS[manifest["metric"]],
                         params={"params": build})
        self._client.create_collection(physical, schema=schema, index_params=params,
                                       consistency_level="Strong",
                                       properties={PROPERTY: json.dumps(manifest, sort_keys=True)})

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
            if name != physical and re.fullmatch(re.escape(alias) + _VERSION_RE, name):
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


def _rows(ids: Sequence[str], vectors: np.ndarray, categories: Sequence[str],
          labels: Sequence[str]) -> Iterator[dict[str, Any]]:
    for i, v, c, lab in zip(ids, vectors, categories, labels):
        # pymilvus takes float32 rows as they are (faster than lists of Python floats).
        yield {ID_FIELD: str(i), VECTOR_FIELD: v, "category": _text(c), "label": _text(lab)}


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


def hits_rows(results: list[list[tuple[str, float]]], ids: Sequence[str] | np.ndarray,
              metric: str = "cosine") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Maps :meth:`MilvusBackend.search` results to catalogue rows, as :class:`imgsim.index.exact.Hits` holds them.

    Ties are ordered by row, as the exact index orders them; ids not in ``ids`` (added to Milvus
    but not to this catalogue) are dropped.

    Args:
        results: One list of ``(id, score)`` per query.
        ids: The catalogue's ids, row-aligned with its stores (``catalog.ok["id"]``).
        metric: ``cosine`` (higher is closer) or ``euclidean`` (lower is closer).

    Returns:
        ``(rows, scores)``: one int64 and one float32 array per query (queries may get different
        counts).
    """
    where = {str(item): row for row, item in enumerate(ids)}
    sign = -1.0 if metric == "cosine" else 1.0
    rows_out, scores_out = [], []
    for hits in results:
        kept = sorted(((sign * s, where[i], s) for i, s in hits if i in where))
        rows_out.append(np.array([r for _, r, _ in kept], dtype=np.int64))
        scores_out.append(np.array([s for _, _, s in kept], dtype=np.float32))
    return rows_out, scores_out
