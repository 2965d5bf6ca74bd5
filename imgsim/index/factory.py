"""One factory for every search backend: reads ``backend.json`` and opens the right one.

:data:`KINDS` is the registry, in the order openers are asked: the first that answers for an
approach's store serves it. A service (Milvus) answers for the approaches ``backend.json`` says
were exported to it; the IVF-PQ or HNSW index when a current one exists beside the store; exact search
always. A new backend (say Qdrant) is one module with an opener (and, for a service, the
``accepts`` and ``export`` functions) plus one entry here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from imgsim.index import exact, hnsw, ivfpq, milvus_search
from imgsim.index.backend import Opening, SearchBackend
from imgsim.ingest.catalog import Catalog
from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactError, write_json_atomic
from imgsim.storage.stores import Store

#: The kind of a catalogue served from its own stores (no backend.json, or export --to local).
LOCAL = "local"


@dataclasses.dataclass(frozen=True)
class BackendKind:
    """How to open one kind of backend, and for a service how to fill it.

    Attributes:
        open: Returns the backend for an approach's store, or None when this kind does not
            serve it (the factory then asks the next kind).
        accepts: For a service: whether an export location (a URI) is one of its own.
        export: For a service: ``export(catalog, uri, stores, log)`` puts each approach's store
            (``{approach: Store}``) there.
        locations: For a service: the locations it accepts, in words (for error messages).
        update: For a service: ``update(catalog, uri, stores, before, log)`` brings what it holds
            in step with ``stores`` by their changed rows only; ``before`` gives, per approach,
            the catalogue fingerprint and row keys of the store it was last given (see
            :func:`imgsim.storage.stores.store_keys`). None: the service is exported again.
    """

    open: Callable[[Opening], SearchBackend | None]
    accepts: Callable[[str], bool] | None = None
    export: Callable[[Catalog, str, dict[str, Store], Callable[[str], None]], None] | None = None
    locations: str = ""
    update: Callable[..., None] | None = None


KINDS: dict[str, BackendKind] = {
    "milvus": BackendKind(milvus_search.open_backend, milvus_search.accepts, milvus_search.export,
                          "a Milvus Lite path ending in .db, or http://host:port of a Milvus server",
                          milvus_search.update),
    "ivfpq": BackendKind(ivfpq.open_backend),
    "hnsw": BackendKind(hnsw.open_backend),
    "exact": BackendKind(exact.open_backend),
}


def services() -> dict[str, BackendKind]:
    """The kinds that are services a catalogue can be exported to."""
    return {name: kind for name, kind in KINDS.items() if kind.export is not None}


def read_backend(catalog: Catalog) -> dict[str, Any]:
    """The catalogue's vector backend: ``{"kind": "local"}``, or a service's kind, URI and approaches.

    :func:`imgsim.build.export` writes it.

    Raises:
        ArtifactError: The file is unreadable or names no known service.
    """
    path = layout.backend_file(catalog.root)
    if not path.is_file():
        return {"kind": LOCAL}
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path} is unreadable ({type(err).__name__}); export the catalogue again") from err
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind != LOCAL and (kind not in services() or not record.get("uri")):
        raise ArtifactError(f"{path} names no known backend; export the catalogue again")
    return record


def open_backend(opening: Opening) -> SearchBackend:
    """The backend that serves ``opening``'s store: the first kind in :data:`KINDS` that answers.

    Raises:
        ArtifactError: No kind answers (the registry lost its exact search).
    """
    for kind in KINDS.values():
        backend = kind.open(opening)
        if backend is not None:
            return backend
    raise ArtifactError(f"no search backend can serve {opening.approach}")


def service_for(uri: str) -> str:
    """The name of the service whose locations include ``uri``.

    Raises:
        ValueError: No service accepts it; the message lists what each accepts.
    """
    for name, kind in services().items():
        if kind.accepts is not None and kind.accepts(uri):
            return name
    forms = "; ".join(f"{name}: {kind.locations}" for name, kind in services().items())
    raise ValueError(f"`uri` must be '{LOCAL}' or a location a backend accepts ({forms}). Received: uri={uri!r}")


def publish(catalog: Catalog, uri: str, stores: dict[str, Store],
            log: Callable[[str], None] = lambda message: None, *,
            before: dict[str, tuple[str | None, Any]] | None = None) -> dict[str, Any]:
    """Exports ``stores`` to the service at ``uri`` (or back to local) and records it in ``backend.json``.

    Args:
        catalog: The catalogue.
        uri: ``local``, or a location one service accepts (see :func:`service_for`).
        stores: ``{approach: Store}`` to export.
        log: Progress lines.
        before: After a change (refresh): per approach, what the service was last given (see
            :attr:`BackendKind.update`); only the changed rows are sent, where the service can.

    Returns:
        The record written (what :func:`read_backend` returns from now on).
    """
    if uri == LOCAL:
        layout.backend_file(catalog.root).unlink(missing_ok=True)
        return {"kind": LOCAL}
    name = service_for(uri)
    kind = KINDS[name]
    if before is not None and kind.update is not None:
        kind.update(catalog, uri, stores, before, log)
    else:
        kind.export(catalog, uri, stores, log)
    record = {"kind": name, "uri": uri, "approaches": list(stores)}
    write_json_atomic(layout.backend_file(catalog.root), record)
    return record
