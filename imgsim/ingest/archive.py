"""Unpacking uploaded zip files, with limits, into a fresh directory.

A zip is the easiest way to hand over a folder of photos, and the easiest way to hand over a
bomb. :func:`unpack_zip` checks the whole listing before writing anything (entry count,
declared total, absolute names, ``..``, symbolic links, a name used as both a file and a
folder, encryption), then streams each entry while counting the bytes really inflated, so
sizes declared in the archive are never trusted. It unpacks into a temporary directory that
is renamed to ``<parent>/<sha256 of the zip>``: the same zip unpacks once, and a different
zip with the same file name never merges into an earlier one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import stat
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from imgsim.ingest.sources import SourceError

#: Entries skipped without complaint: macOS resource forks and folder metadata.
IGNORED_PARTS = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db"})
_CHUNK = 1 << 16


class ArchiveError(SourceError):
    """A zip is refused; the message says which limit or which entry."""


@dataclasses.dataclass(frozen=True)
class ZipLimits:
    """What a zip may hold.

    Attributes:
        max_zip_bytes: Largest zip file.
        max_entries: Most entries (files and folders).
        max_total_bytes: Most bytes all entries may inflate to, counted while inflating.
        max_ratio: Largest inflated/compressed ratio of one entry (checked once it has
            inflated past ``ratio_floor`` bytes; photos compress about 1:1, text 10:1).
        ratio_floor: Entries smaller than this are not ratio-checked.
    """

    max_zip_bytes: int = 1024 * 2**20
    max_entries: int = 20_000
    max_total_bytes: int = 2 * 2**30
    max_ratio: float = 200.0
    ratio_floor: int = 2**20

    def __post_init__(self) -> None:
        for name in ("max_zip_bytes", "max_entries", "max_total_bytes", "ratio_floor"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1. Received: {name}={getattr(self, name)}")
        if self.max_ratio <= 1:
            raise ValueError(f"`max_ratio` must be > 1. Received: max_ratio={self.max_ratio}")


def _member_parts(info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """The checked path parts of an entry; None for entries to skip."""
    name = info.filename
    if "\x00" in name:
        raise ArchiveError(f"the zip entry {name!r} has a NUL character in its name")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise ArchiveError(f"the zip entry {name!r} has an absolute name; entries must be relative")
    parts = tuple(p for p in PurePosixPath(posix).parts if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"the zip entry {name!r} leaves the archive's folder through '..'")
    if not parts or any(p in IGNORED_PARTS for p in parts):
        return None
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"the zip entry {name!r} is a symbolic link; links are not unpacked")
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ArchiveError(f"the zip entry {name!r} is not a regular file or folder")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"the zip entry {name!r} is encrypted")
    return parts


def check_listing(archive: zipfile.ZipFile, limits: ZipLimits) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Checks every entry's name and the declared totals before anything is written.

    Returns:
        The files to unpack (folders and ignored entries left out), with their path parts.

    Raises:
        ArchiveError: Too many entries, too large declared, or an entry with an unsafe name.
    """
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"the zip has {len(infos)} entries; the limit is {limits.max_entries}")
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_total_bytes:
        raise ArchiveError(
            f"the zip would unpack to {declared / 2**20:.0f} MB; the limit is "
            f"{limits.max_total_bytes / 2**20:.0f} MB"
        )
    files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    file_keys: dict[tuple[str, ...], str] = {}
    dir_keys: set[tuple[str, ...]] = set()
    for info in infos:
        parts = _member_parts(info)
        if parts is None:
            continue
        # Case-folded, so that `A.jpg` and `a.jpg` cannot collide on a case-insensitive disk.
        key = tuple(p.casefold() for p in parts)
        parents = {key[:i] for i in range(1, len(key))}
        if info.is_dir():
            if key in file_keys:
                raise ArchiveError(
                    f"the zip names {info.filename!r} as both a file and a folder"
                )
            dir_keys.add(key)
            dir_keys |= parents
            continue
        if key in file_keys:
            raise ArchiveError(f"the zip holds {info.filename!r} twice")
        if key in dir_keys or any(p in file_keys for p in parents):
            raise ArchiveError(
                f"the zip names a path as both a file and a folder (at {info.filename!r})"
            )
        file_keys[key] = info.filename
        dir_keys |= parents
        files.append((info, parts))
    return files


def _hash_and_size(source: str | os.PathLike | BinaryIO, limits: ZipLimits) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    if isinstance(source, (str, os.PathLike)):
        from imgsim.ingest.safety import FileRefusedError, check_regular_file

        try:
            info = check_regular_file(source)
        except FileRefusedError as err:
            raise ArchiveError(str(err)) from None
        if info.st_size > limits.max_zip_bytes:
            raise ArchiveError(
                f"the zip is {info.st_size / 2**20:.0f} MB; the limit is "
                f"{limits.max_zip_bytes / 2**20:.0f} MB"
            )
        handle = open(source, "rb")  # noqa: SIM115 - closed below
    else:
        handle = source
        handle.seek(0)
    try:
        while block := handle.read(1 << 20):
            size += len(block)
            if size > limits.max_zip_bytes:
                raise ArchiveError(
                    f"the zip is over {limits.max_zip_bytes / 2**20:.0f} MB, the limit"
                )
            digest.update(block)
    finally:
        if handle is not source:
            handle.close()
        else:
            handle.seek(0)
    return digest.hexdigest(), size


def _extract(archive: zipfile.ZipFile, files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]],
             dest: Path, limits: ZipLimits) -> None:
    total = 0
    for info, parts in files:
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as out, archive.open(info) as entry:
            while block := entry.read(_CHUNK):
                written += len(block)
                total += len(block)
                if total > limits.max_total_bytes:
                    raise ArchiveError(
                        f"the zip inflates to more than {limits.max_total_bytes / 2**20:.0f} MB, "
                        "the limit"
                    )
                if written > limits.ratio_floor and written > limits.max_ratio * max(info.compress_size, 1):
                    raise ArchiveError(
                        f"the zip entry {info.filename!r} inflates more than "
                        f"{limits.max_ratio:.0f} times its compressed size (a zip bomb?); "
                        "the ratio limit is there to stop those"
                    )
                out.write(block)


def unpack_zip(
    source: str | os.PathLike | BinaryIO, parent: str | os.PathLike, limits: ZipLimits | None = None
) -> Path:
    """Unpacks a zip into ``parent/<sha256 of the zip>`` and returns that directory.

    If that directory already exists (the same zip was unpacked before), it is returned as is.

    Args:
        source: The zip: a path, or a seekable binary file object (an upload).
        parent: Where unpacked archives live (e.g. ``CATALOG/sources``).
        limits: The limits; defaults to :class:`ZipLimits()`.

    Returns:
        The directory holding the zip's files.

    Raises:
        ArchiveError: The zip is damaged, or breaks a limit or a naming rule; the message says
            which, naming the entry.
    """
    limits = limits or ZipLimits()
    digest, _size = _hash_and_size(source, limits)
    parent = Path(parent)
    dest = parent / digest
    if dest.is_dir():
        return dest
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{digest[:16]}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        try:
            with zipfile.ZipFile(source) as archive:
                files = check_listing(archive, limits)
                _extract(archive, files, tmp, limits)
        except ArchiveError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
                NotImplementedError) as err:
            raise ArchiveError(
                f"the zip is damaged or not a valid zip ({type(err).__name__}: {str(err)[:120]})"
            ) from None
        except (OSError, ValueError, RuntimeError) as err:
            raise ArchiveError(
                f"the zip could not be unpacked ({type(err).__name__}: {str(err)[:120]})"
            ) from None
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another process unpacked the same zip meanwhile: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
