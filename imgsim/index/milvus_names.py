"""Names, filter expressions, URIs and records of imgsim's Milvus collections: pure functions.

Filters are pushed down as Milvus expressions built here from escaped string literals (never by
pasting user text into an expression). :mod:`imgsim.index.milvus` talks to Milvus with them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.ingest.catalog import Catalog
from imgsim.storage.artifacts import library_versions, now_iso
from imgsim.storage.stores import MODEL_FIELDS, Store

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
# The suffix of a physical collection behind an alias (one per export).
VERSION_SUFFIX = r"_v\d+$"
# Control characters that the expression grammar has no escape for in every Milvus version.
_UNESCAPABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def collection_name(catalog_name: str, approach: str, identity: str = "") -> str:
    """A valid Milvus collection name for a (catalogue, approach) pair.

    Milvus names allow ``[A-Za-z0-9_]`` only, so other characters become ``_`` and a short hash
    of the original pair and the catalogue's identity keeps ``my-shop`` and ``my_shop`` apart,
    and two catalogues named ``shop`` in different folders (see :func:`catalog_collection`).

    Args:
        catalog_name: The catalogue's name (any text), shown in the name for people.
        approach: The approach (``pretrained``, ``autoencoder``, ...).
        identity: What is unique to the catalogue (:attr:`imgsim.ingest.catalog.Catalog.identity`).

    Returns:
        ``imgsim_<catalog>_<approach>_<hash8>``, at most 200 characters.

    Raises:
        ValueError: An empty catalogue name or approach.
    """
    if not catalog_name or not approach:
        raise ValueError(f"`catalog_name` and `approach` must be non-empty. "
                         f"Received: catalog_name={catalog_name!r}, approach={approach!r}")
    digest = hashlib.sha256(f"{catalog_name}\0{approach}\0{identity}".encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9_]", "_", catalog_name)[:120]
    approach_slug = re.sub(r"[^A-Za-z0-9_]", "_", approach)[:50]
    return f"imgsim_{slug}_{approach_slug}_{digest}"


def catalog_collection(catalog: Catalog, approach: str) -> str:
    """The collection of one approach of ``catalog``: named by its identity, not only its name."""
    return collection_name(catalog.name, approach, catalog.identity)


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


def filter_expression(category: str | None = None, exclude_ids: Sequence[str] | None = None,
                      include_ids: Sequence[str] | None = None) -> str:
    """The Milvus filter for a category, ids to keep and ids to leave out (``""`` for none).

    Args:
        category: Only rows whose ``category`` equals this.
        exclude_ids: Rows whose ``id`` is one of these are left out.
        include_ids: If given, only rows whose ``id`` is one of these (conditions on columns the
            collection does not store, resolved to ids by the catalogue).
    """
    parts = []
    if category is not None:
        parts.append(f"category == {quote(category)}")
    if include_ids is not None:
        parts.append(f"id in [{', '.join(quote(str(i)) for i in include_ids)}]")
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
        "catalog_identity": catalog.identity,
        "catalog_root": str(catalog.root.expanduser().resolve()),
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


def text_value(value: Any) -> str:
    """A table cell as a VARCHAR value (missing cells become ``""``)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def check_bytes(values: Sequence[str], limit: int, what: str) -> None:
    for v in values:
        if len(v.encode("utf-8")) > limit:
            raise ValueError(f"`{what}` values must be at most {limit} bytes in UTF-8. Received: {v[:60]!r}...")


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


def insert_rows(ids: Sequence[str], vectors: np.ndarray, categories: Sequence[str],
          labels: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The rows of an insert or upsert call, as a collection holds them."""
    for i, v, c, lab in zip(ids, vectors, categories, labels):
        # pymilvus takes float32 rows as they are (faster than lists of Python floats).
        yield {ID_FIELD: str(i), VECTOR_FIELD: v, "category": text_value(c), "label": text_value(lab)}


def check_rows(ids: Sequence[str], vectors: np.ndarray, categories: Sequence[str],
               labels: Sequence[str], *, dim: int) -> np.ndarray:
    """``vectors`` as float32 once the rows to insert are checked; raises ``ValueError`` naming what is wrong."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.shape[0] != len(ids):
        raise ValueError(f"`vectors` must have shape ({len(ids)}, {dim}). Received: {vectors.shape}")
    if len(categories) != len(ids) or len(labels) != len(ids):
        raise ValueError(f"`categories` and `labels` must have one value per id ({len(ids)}). "
                         f"Received: {len(categories)} and {len(labels)}")
    if not np.isfinite(vectors).all():
        raise ValueError("`vectors` must be finite. Received: NaN or infinity")
    check_bytes([str(i) for i in ids], MAX_ID_BYTES, "ids")
    check_bytes([text_value(c) for c in categories], MAX_TEXT_BYTES, "categories")
    check_bytes([text_value(v) for v in labels], MAX_TEXT_BYTES, "labels")
    return vectors
