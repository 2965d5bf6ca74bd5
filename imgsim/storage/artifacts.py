"""On-disk artifacts: directories with a ``manifest.json``, written atomically.

Every artifact imgsim writes (a catalogue, an embedding store, a trained model) is a directory
holding a ``manifest.json``. Directories are built under a temporary name beside their final
place, flushed to disk and swapped in by one rename (see :mod:`imgsim.storage.swap`), so a crash
mid-write leaves the previous version loadable. A write that fails (a full disk) raises
:class:`StorageWriteError` and leaves the previous version in place.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imgsim.errors import ImgsimError
from imgsim.storage import swap

MANIFEST = "manifest.json"


class ArtifactError(ImgsimError, RuntimeError):
    """An artifact is missing, damaged, or does not match what it is used with."""


class ArtifactMismatchError(ArtifactError):
    """An artifact is intact but was made for another model, options or catalogue state."""


class StorageWriteError(ArtifactError):
    """Writing an artifact failed (a full disk, a read-only or vanished folder); nothing was replaced."""


def write_error(err: OSError, path: str | os.PathLike) -> StorageWriteError:
    """The one-line :class:`StorageWriteError` for an ``OSError`` met while writing ``path``."""
    if isinstance(err, StorageWriteError):
        return err
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageWriteError(f"no space left on device while writing {path}")
    return StorageWriteError(f"could not write {path}: {err.strerror or err}")


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turns an ``OSError`` raised inside the block into a :class:`StorageWriteError` naming ``path``."""
    try:
        yield
    except StorageWriteError:
        raise
    except OSError as err:
        raise write_error(err, path) from err


def cache_dir() -> Path:
    """Where rebuildable caches live (converted weights): ``$IMGSIM_CACHE_DIR``, else XDG."""
    env = os.environ.get("IMGSIM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "imgsim"


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string, for manifests.

    Microseconds, not seconds: an item added in the same second a model was trained must still
    compare as added after it (``added_at > created``).
    """
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour an artifact depends on."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("imgsim", "numpy", "pillow", "keras", "tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    if "imgsim" not in versions:
        from imgsim import __version__

        versions["imgsim"] = __version__
    return versions


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(*parts: str) -> str:
    """The hex sha256 of strings joined by newlines (for fingerprints of id lists)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON to ``path`` through a flushed temporary file and a rename (a commit point).

    Raises:
        StorageWriteError: The write failed; ``path`` is as it was.
    """
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"),
                       durable=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> None:
    """Writes bytes to ``path`` through a temporary file and a rename.

    Args:
        path: The file.
        data: Its new bytes.
        durable: ``fsync`` the file before the rename and the folder after it, so the rename
            commits bytes that are on disk (for commit points; thumbnails skip it).

    Raises:
        StorageWriteError: The write failed (a full disk, ...); ``path`` is as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
            if durable:
                swap.fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def read_manifest(directory: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Reads ``directory/manifest.json``.

    Args:
        directory: The artifact directory.
        kind: If given, the manifest's ``kind`` must equal it.

    Raises:
        ArtifactError: The manifest is missing, unreadable, or of another kind.
    """
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as err:
        raise ArtifactError(f"{directory} has no {MANIFEST}: not an imgsim {kind or 'artifact'}") from err
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is unreadable: {err}") from err
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(
            f"{directory} holds a {manifest.get('kind')!r} artifact, not a {kind!r}"
        )
    return manifest


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary directory that replaces ``final`` when the block succeeds.

    If the block raises, the temporary directory is removed and ``final`` is untouched. The new
    version is flushed to disk and committed by one rename of a symlink (see
    :mod:`imgsim.storage.swap`); the old version is deleted afterwards.

    Raises:
        StorageWriteError: The block or the swap met an ``OSError`` (a full disk, ...); ``final``
            is as it was.
    """
    final = Path(final)
    with writing(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        swap.recover(final)  # leftovers of a writer killed earlier
        tmp = final.with_name(f".{final.name}{swap.TMP}{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
    try:
        with writing(final):
            yield tmp
            swap.swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_artifact(final: str | os.PathLike, manifest: dict[str, Any],
                   write: Callable[[Path], dict[str, Any] | None], *, hash_files: bool = True) -> dict[str, Any]:
    """Writes an artifact directory atomically: its files first, its manifest last.

    ``write(tmp)`` writes the files into the temporary directory and may return more manifest
    fields. The manifest then records every file's size (and sha256 when ``hash_files``), the
    creation time and the library versions, and the directory is swapped into place.

    Args:
        final: The artifact directory.
        manifest: At least ``kind`` and ``format_version``.
        write: Writes the artifact's files into the directory it is given.
        hash_files: Record each file's sha256 (skip for multi-gigabyte matrices).

    Returns:
        The manifest as written.
    """
    if "kind" not in manifest or "format_version" not in manifest:
        raise ValueError(f"`manifest` must have kind and format_version. Received: {sorted(manifest)}")
    with atomic_directory(final) as tmp:
        manifest = {**manifest, **(write(tmp) or {})}
        files = {}
        for path in sorted(p for p in tmp.iterdir() if p.is_file()):
            files[path.name] = {"bytes": path.stat().st_size}
            if hash_files:
                files[path.name]["sha256"] = sha256_file(path)
        manifest = {**manifest, "files": files, "created": manifest.get("created") or now_iso(),
                    "library_versions": library_versions()}
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def remove_artifact(final: str | os.PathLike) -> None:
    """Deletes an artifact directory written by :func:`atomic_directory`, with all its versions."""
    with writing(final):
        swap.remove(Path(final))


def load_artifact(root: str | os.PathLike, kind: str, format_version: int, *,
                  expect: dict[str, Any] | None = None, verify: bool = True) -> dict[str, Any]:
    """Reads and checks an artifact written by :func:`write_artifact`.

    Every loader checks the same things the same way: the kind, the format version, the fields
    in ``expect`` (what the caller is about to use it with), and that each recorded file is
    present with its recorded size (and, when ``verify``, its sha256).

    Raises:
        ArtifactError: Missing, of another kind or format, or damaged.
        ArtifactMismatchError: Intact, but made for something else than ``expect`` says.
    """
    root = Path(root)
    real = root.resolve()  # one version, even if a writer swaps in the next one meanwhile
    root = root.with_name(swap.public_name(real))
    manifest = read_manifest(real, kind)
    if manifest.get("format_version") != format_version:
        raise ArtifactMismatchError(f"{root.name}: {kind} format {manifest.get('format_version')} is not "
                                    f"{format_version} (written by another imgsim version); rebuild it")
    for field, value in (expect or {}).items():
        if manifest.get(field) != value:
            raise ArtifactMismatchError(f"{root.name}: made with {field}={manifest.get(field)!r}, "
                                        f"but now {field}={value!r}; rebuild it")
    for name, recorded in (manifest.get("files") or {}).items():
        path = real / name
        if not path.is_file() or path.stat().st_size != recorded.get("bytes"):
            raise ArtifactError(f"{root.name}: {name} is missing or damaged; rebuild it")
        if verify and "sha256" in recorded and sha256_file(path) != recorded["sha256"]:
            raise ArtifactError(f"{root.name}: {name} does not match its manifest; rebuild it")
    return manifest
