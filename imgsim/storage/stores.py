"""Embedding stores: one directory per approach inside a catalogue.

Layout::

    CATALOG/stores/<approach>/
      manifest.json     kind "embedding_store": approach, model name and fingerprint, options,
                        dim, image size, item count, metric, catalogue fingerprint, versions
      embeddings.npy    (N, dim) float32, row i = row i of ``Catalog.ok``
      ids.npy           (N,) unicode item ids, to check that alignment
      keys.npy          (N,) unicode "id<TAB>content hash" per row: what each vector was made from

A build reuses every row of the previous store whose key is unchanged (same item, same image
bytes) when the model is the same, so adding, changing or removing a few items embeds only those.
It writes the newly embedded rows in chunks into ``.<approach>.partial/``, each named by the
sha256 of its rows' keys (so an interrupted build resumes where it stopped, and a chunk made for
another row set is never used), then assembles the store in a temporary directory that is
swapped into place (see :mod:`imgsim.storage.swap`): a build killed at any point leaves the
previous store loadable.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import contextvars
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.approaches.features import Extractor
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.images import load_square
from imgsim.progress import Progress, silent
from imgsim.storage import layout
from imgsim.storage.artifacts import (
    ArtifactError,
    ArtifactMismatchError,
    load_artifact,
    read_manifest,
    sha256_text,
    write_artifact,
    write_json_atomic,
    writing,
)

KIND = "embedding_store"
FORMAT_VERSION = 2  # 2: keys.npy, rows reused across builds
CHUNK_ROWS = 1024
# The fields that must match between a store and the model it is queried with.
MODEL_FIELDS = ("approach", "model", "fingerprint", "options", "dim", "image_size")


class StoreMismatchError(ArtifactMismatchError):
    """A store was built for another model, options or catalogue; the message says which."""


def store_path(catalog: Catalog, approach: str) -> Path:
    """``CATALOG/stores/<approach>``."""
    return layout.store_dir(catalog.root, approach)


def row_keys(catalog: Catalog) -> np.ndarray:
    """What each ingested item's vector is made from: ``id<TAB>sha256`` (or its source)."""
    ok = catalog.ok
    content = ok["sha256"] if "sha256" in ok.columns else ok["source"]
    return np.array([f"{i}\t{c}" for i, c in zip(ok["id"], content)], dtype=str)


def model_spec(approach: str, extractor: Extractor) -> dict[str, Any]:
    """The manifest fields that identify the model behind a store."""
    return {
        "approach": approach,
        "model": extractor.name,
        "fingerprint": extractor.fingerprint,
        "options": dict(extractor.options),
        "dim": int(extractor.dim),
        "image_size": int(extractor.image_size),
    }


class Store:
    """A loaded embedding store (embeddings memory-mapped)."""

    def __init__(self, root: Path, manifest: dict[str, Any], embeddings: np.ndarray,
                 ids: np.ndarray) -> None:
        self.root = root
        self.manifest = manifest
        self.embeddings = embeddings
        self.ids = ids

    @classmethod
    def load(cls, root: str | os.PathLike, catalog: Catalog | None = None,
             expect: dict[str, Any] | None = None) -> Store:
        """Loads a store and checks it against its catalogue and model.

        Args:
            root: The store directory.
            catalog: If given, the store must have been built for its current item list.
            expect: If given (see :func:`model_spec`), those fields must match the manifest.

        Raises:
            ArtifactError: No store there, or it is damaged.
            StoreMismatchError: It was built for another catalogue state, model or options.
        """
        root = Path(root)
        real = root.resolve()  # read one whole version, whatever a writer swaps in meanwhile
        try:
            manifest = load_artifact(real, KIND, FORMAT_VERSION, expect=expect, verify=False)
        except ArtifactMismatchError as err:
            raise StoreMismatchError(f"store {root.name} does not fit the model: {err}") from err
        if catalog is not None and manifest.get("catalog_fingerprint") != catalog.fingerprint:
            raise StoreMismatchError(
                f"store {root.name} was built for another version of catalogue {catalog.name} "
                f"({manifest.get('count')} items, now {len(catalog.ok)}); rebuild it"
            )
        try:
            embeddings = np.load(real / "embeddings.npy", mmap_mode="r", allow_pickle=False)
            ids = np.load(real / "ids.npy", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ArtifactError(f"store {root.name} is unreadable: {err}") from err
        if embeddings.shape != (manifest["count"], manifest["dim"]) or len(ids) != manifest["count"]:
            raise ArtifactError(f"store {root} is damaged: shapes do not match its manifest")
        return cls(root, manifest, embeddings, ids)


def store_keys(root: str | os.PathLike) -> tuple[str | None, np.ndarray]:
    """The catalogue fingerprint a store was built for and its row keys (``(None, [])`` without one).

    What a vector service holding this store must be told when the store changes.
    """
    real = Path(root).resolve()  # one version, whatever a writer swaps in meanwhile
    try:
        return read_manifest(real, KIND).get("catalog_fingerprint"), np.load(real / "keys.npy", allow_pickle=False)
    except (ArtifactError, OSError, ValueError):
        return None, np.zeros(0, dtype=str)


def is_current(catalog: Catalog, approach: str, expect: dict[str, Any] | None) -> bool:
    """Whether the catalogue's store for ``approach`` is loadable and matches ``expect`` (None: any model)."""
    try:
        Store.load(store_path(catalog, approach), catalog, expect)
    except ArtifactError:
        return False
    return True


def iter_batches(paths: list[Path], size: int, batch_size: int,
                 workers: int = 2) -> Iterator[np.ndarray]:
    """Yields ``(B, size, size, 3)`` uint8 batches, decoding ahead in threads.

    Pillow releases the GIL while decoding and resizing, so the next batches are prepared while
    the model runs on the current one.
    """
    def load(chunk: list[Path]) -> np.ndarray:
        return np.stack([load_square(p, size) for p in chunk]) if chunk else np.zeros((0, size, size, 3), np.uint8)

    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[cf.Future] = []
        for chunk in chunks:
            pending.append(pool.submit(load, chunk))
            if len(pending) > workers + 1:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


#: Embeds chunks of thumbnails: ``(extractor, chunks of paths, batch size, rows_done)`` -> each
#: chunk's ``(len(chunk), dim)`` float32 vectors, in order, lazily (see :func:`embed_chunks`).
Embedder = Callable[[Extractor, list[list[Path]], int, Callable[[int], None]], Iterator[np.ndarray]]
_EMBEDDER: contextvars.ContextVar[Embedder | None] = contextvars.ContextVar("imgsim_embedder", default=None)


def embed_chunks(extractor: Extractor, chunks: list[list[Path]], batch_size: int,
                 rows_done: Callable[[int], None] = lambda rows: None) -> Iterator[np.ndarray]:
    """The local :data:`Embedder`: each chunk's thumbnails decoded here and embedded by ``extractor``.

    Yields:
        Per chunk, its ``(len(chunk), extractor.dim)`` float32 vectors.
    """
    for paths in chunks:
        parts = []
        for batch in iter_batches(paths, extractor.image_size, batch_size):
            parts.append(np.asarray(extractor.embed(batch), dtype=np.float32))
            rows_done(len(batch))
        yield np.concatenate(parts)


@contextlib.contextmanager
def embedding_with(embedder: Embedder) -> Iterator[None]:
    """Within the block, :func:`build_store` embeds through ``embedder`` (a cluster's workers)."""
    token = _EMBEDDER.set(embedder)
    try:
        yield
    finally:
        _EMBEDDER.reset(token)


def previous_rows(catalog: Catalog, approach: str, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Rows of the catalogue's current store for ``approach`` that a rebuild may reuse.

    Only a store built with the same model (``spec``, see :func:`model_spec`) counts, whatever
    catalogue state it was built for.

    Returns:
        ``{row key: vector}`` (empty when there is no such store).
    """
    try:
        old = Store.load(store_path(catalog, approach), None, spec)
        keys = np.load(old.root / "keys.npy", allow_pickle=False)
    except (ArtifactError, OSError, ValueError):
        return {}
    return dict(zip(keys.tolist(), old.embeddings))


def build_store(
    catalog: Catalog,
    approach: str,
    extractor: Extractor,
    *,
    metric: str = "cosine",
    batch_size: int = 32,
    chunk_rows: int = CHUNK_ROWS,
    progress: Progress = silent,
) -> Store:
    """Embeds the catalogue's ingested items and writes the store for ``approach``.

    Rows of the previous store whose item and image bytes are unchanged are reused when it was
    built with the same model; only new and changed items are embedded. Those are embedded in
    chunks of ``chunk_rows`` kept in a partial directory until the store is complete, so
    re-running after an interruption embeds only the missing chunks.

    Args:
        catalog: The catalogue (its thumbnails are read).
        approach: The store's name (``pretrained``, ``autoencoder``, ...).
        extractor: Anything with the :class:`imgsim.approaches.features.Extractor` interface.
        metric: The distance the store is searched with by default.
        batch_size: Images per model call.
        chunk_rows: Rows per resumable chunk (a multiple of ``batch_size`` works best).
        progress: Called after each batch.

    Returns:
        The new :class:`Store`; its manifest's ``reused_rows`` says how many rows were kept.
    """
    if chunk_rows < 1 or batch_size < 1:
        raise ValueError(f"`chunk_rows` and `batch_size` must be >= 1. Received: {chunk_rows}, {batch_size}")
    if len(catalog.ok) == 0:
        raise ValueError(f"catalogue {catalog.name} has no ingested items to embed")
    final = store_path(catalog, approach)
    model = model_spec(approach, extractor)
    keys = row_keys(catalog)
    reuse = previous_rows(catalog, approach, model)
    todo = [i for i, key in enumerate(keys) if key not in reuse]
    spec = {**model, "chunk_format": 2}  # chunks are named by their rows, so any catalogue state may reuse them
    partial = final.with_name(f".{approach}.partial")
    if partial.exists():
        try:
            if read_manifest(partial, "partial_store").get("spec") != spec:
                shutil.rmtree(partial)
        except ArtifactError:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json_atomic(partial / "manifest.json", {"kind": "partial_store", "spec": spec})

    paths = catalog.thumb_paths()
    n_chunks = (len(todo) + chunk_rows - 1) // chunk_rows
    done = len(keys) - len(todo)
    progress(done, len(keys), f"{done} unchanged rows reused")
    embeddings = np.empty((len(keys), extractor.dim), np.float32)
    missing = []  # (members, chunk file) of the chunks still to embed
    for c in range(n_chunks):
        members = todo[c * chunk_rows:(c + 1) * chunk_rows]
        chunk_file = partial / f"chunk_{sha256_text(*keys[members].tolist())[:24]}.npy"
        vectors = _load_chunk(chunk_file, (len(members), extractor.dim))
        if vectors is not None:
            embeddings[members] = vectors
            done += len(members)
            progress(done, len(keys), f"chunk {c + 1}/{n_chunks} already embedded")
        else:
            missing.append((members, chunk_file))

    def embedded(rows: int) -> None:
        nonlocal done
        done += rows
        progress(done, len(keys), f"embedding {len(missing)} of {n_chunks} chunks")

    embed = _EMBEDDER.get() or embed_chunks
    chunks = embed(extractor, [[paths[i] for i in members] for members, _ in missing], batch_size, embedded)
    for (members, chunk_file), vectors in zip(missing, chunks):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(members), extractor.dim):
            raise ValueError(f"an embedder must return ({len(members)}, {extractor.dim}) for this chunk. "
                             f"Received: {vectors.shape}")
        embeddings[members] = vectors
        tmp = partial / f".{chunk_file.stem}.tmp.npy"
        with writing(chunk_file):
            np.save(tmp, vectors, allow_pickle=False)
            os.replace(tmp, chunk_file)

    for i, key in enumerate(keys):
        if key in reuse:
            embeddings[i] = reuse[key]
    store = write_store(catalog, approach, extractor, embeddings, metric=metric,
                        extra={"reused_rows": len(keys) - len(todo)})
    shutil.rmtree(partial, ignore_errors=True)
    return store


class _Recorded:
    """The identity of the model a store records, standing in for the model when no row needs it."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.name, self.fingerprint = manifest["model"], manifest["fingerprint"]
        self.options, self.dim, self.image_size = manifest["options"], manifest["dim"], manifest["image_size"]


def restrict_store(catalog: Catalog, approach: str) -> Store | None:
    """Rewrites ``approach``'s store for the catalogue when none of its rows needs the model.

    After a removal (or any change that only drops or reorders items) every row's vector is
    already in the store: it is kept, with the model identity and the approach's own manifest
    fields as they were, and no model is loaded.

    Returns:
        The new store, or None when some row needs embedding (the approach's build does that).
    """
    root = store_path(catalog, approach)
    try:
        old = Store.load(root)
        keys = np.load(old.root.resolve() / "keys.npy", allow_pickle=False).tolist()
        recorded = _Recorded(old.manifest)
    except (ArtifactError, OSError, ValueError, KeyError):
        return None
    where = {key: row for row, key in enumerate(keys)}
    wanted = row_keys(catalog).tolist()
    if not wanted or any(key not in where for key in wanted):
        return None
    own = set(MODEL_FIELDS) | {"kind", "format_version", "metric", "count", "catalog_fingerprint", "source"}
    extra = {k: v for k, v in old.manifest.items() if k not in own}
    embeddings = np.asarray(old.embeddings)[[where[key] for key in wanted]]
    return write_store(catalog, approach, recorded, embeddings, metric=old.manifest.get("metric", "cosine"),
                       extra={**extra, "reused_rows": len(wanted)})


def _load_chunk(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """A resumable chunk's vectors, or ``None`` when it is absent or not of ``shape`` (damaged)."""
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return vectors if vectors.shape == shape and vectors.dtype == np.float32 else None


def write_store(catalog: Catalog, approach: str, extractor: Extractor, embeddings: np.ndarray,
                *, metric: str = "cosine", extra: dict[str, Any] | None = None) -> Store:
    """Writes ready embeddings (row i = ``catalog.ok`` row i) as the store of ``approach``, atomically.

    Args:
        catalog: The catalogue the rows belong to.
        approach: The store's name.
        extractor: The model that made the embeddings (its identity goes in the manifest).
        embeddings: ``(len(catalog.ok), extractor.dim)`` float32.
        metric: The distance the store is searched with by default.
        extra: More manifest fields.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.shape != (len(catalog.ok), extractor.dim):
        raise ValueError(f"`embeddings` must have shape ({len(catalog.ok)}, {extractor.dim}). "
                         f"Received: {embeddings.shape}")
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        **model_spec(approach, extractor),
        "metric": metric,
        "count": int(embeddings.shape[0]),
        "catalog_fingerprint": catalog.fingerprint,
        "source": catalog.manifest.get("source"),
        **(extra or {}),
    }

    def write(tmp: Path) -> None:
        np.save(tmp / "embeddings.npy", embeddings, allow_pickle=False)
        np.save(tmp / "ids.npy", catalog.ok["id"].to_numpy(dtype=str), allow_pickle=False)
        np.save(tmp / "keys.npy", row_keys(catalog), allow_pickle=False)

    write_artifact(store_path(catalog, approach), manifest, write, hash_files=False)
    return Store.load(store_path(catalog, approach), catalog, model_spec(approach, extractor))
