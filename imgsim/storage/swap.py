"""Directory swaps with no moment where neither version is in place, and their recovery.

An artifact directory ``P/NAME`` is a relative symlink to a versioned directory ``P/.NAME@v<N>``.
A new version is written under ``P/.NAME@tmp-<random>``, flushed to disk, renamed to the next
version number, and then a fresh symlink replaces ``P/NAME`` in one ``os.replace``: that rename
is the commit. A reader resolves ``P/NAME`` once and reads one whole version; the old version is
deleted after the switch (an open or memory-mapped file of it stays readable on POSIX).

A kill at any moment leaves ``P/NAME`` pointing at a complete version (the old one before the
commit, the new one after), plus leftovers that :func:`recover` removes. An old-layout real
directory is migrated by renaming it to a version first; a kill inside that one step leaves no
``P/NAME`` for an instant, and :func:`recover` points it back at the newest complete version.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

VERSION = "@v"
TMP = "@tmp-"
LINK = "@link-"
# Leftovers of the swap before versioned directories: `.NAME.tmp-xxxxxxxx` and `.NAME.old-xxxxxxxx`.
_LEGACY = re.compile(r"\.(?P<name>.+)\.(?P<what>tmp|old)-[0-9a-f]{8}")
_OURS = re.compile(r"\.(?P<name>.+)@(?:v\d+|tmp-[0-9a-f]{8}|link-[0-9a-f]{8})")


def public_name(path: Path) -> str:
    """The artifact name a path stands for: ``NAME`` for ``P/.NAME@v3`` as for ``P/NAME``."""
    match = _OURS.fullmatch(path.name)
    return match["name"] if match else path.name


def version_path(final: Path, number: int) -> Path:
    """``P/.NAME@v<number>``."""
    return final.with_name(f".{final.name}{VERSION}{number}")


def versions(final: Path) -> dict[int, Path]:
    """The versioned directories of ``final`` on disk, by number."""
    found = {}
    prefix = f".{final.name}{VERSION}"
    if final.parent.is_dir():
        for path in final.parent.iterdir():
            number = path.name[len(prefix):]
            if path.name.startswith(prefix) and number.isdigit() and not path.is_symlink():
                found[int(number)] = path
    return found


def fsync_dir(directory: Path) -> None:
    """Flushes a directory's entries (the renames in it) to disk."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flushes every file under ``root``, then the directories, to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def point(final: Path, target: Path) -> None:
    """Makes ``final`` a symlink to ``target`` (a sibling) in one ``os.replace``."""
    link = final.with_name(f".{final.name}{LINK}{uuid.uuid4().hex[:8]}")
    os.symlink(target.name, link)
    try:
        os.replace(link, final)
    except BaseException:
        link.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def swap_in(tmp: Path, final: Path) -> Path:
    """Commits the complete directory ``tmp`` as the new version of ``final``.

    Returns:
        The versioned directory ``final`` now points at.
    """
    fsync_tree(tmp)
    number = max(versions(final), default=0) + 1
    if final.is_dir() and not final.is_symlink():  # the old layout: make it a version first
        os.rename(final, version_path(final, number))
        number += 1
    new = version_path(final, number)
    os.rename(tmp, new)
    point(final, new)
    _drop_others(final, new)
    return new


def current(final: Path) -> Path | None:
    """The versioned directory ``final`` points at, or ``None`` (missing or dangling)."""
    if final.is_symlink():
        target = final.parent / os.readlink(final)
        return target if target.is_dir() else None
    return final if final.is_dir() else None


def _drop_others(final: Path, keep: Path | None) -> None:
    for path in versions(final).values():
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)


def recover(final: Path) -> None:
    """Finishes or rolls back whatever a killed swap of ``final`` left half-done.

    Temporary directories and stray links are removed (an unfinished write). If ``final`` is
    missing or dangling, it is pointed at the newest complete version (or a previous version the
    old two-rename swap had set aside). Versions ``final`` does not point at are deleted.
    Call it only while holding the catalogue's writer lock.
    """
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return
    legacy_old = []
    for path in parent.iterdir():
        ours, legacy = _OURS.fullmatch(path.name), _LEGACY.fullmatch(path.name)
        if ours and ours["name"] == final.name and (TMP in path.name or LINK in path.name):
            if path.is_symlink() or not path.is_dir():
                path.unlink(missing_ok=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
        elif legacy and legacy["name"] == final.name:
            if legacy["what"] == "old":
                legacy_old.append(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
    if current(final) is None:
        if final.is_symlink():
            final.unlink()
        found = versions(final)
        if found:
            point(final, found[max(found)])
        elif legacy_old:  # the old swap was killed between its two renames: put the previous back
            os.rename(legacy_old.pop(), final)
    for path in legacy_old:
        shutil.rmtree(path, ignore_errors=True)
    _drop_others(final, current(final))


def recover_all(directory: Path) -> None:
    """Runs :func:`recover` for every artifact of ``directory`` that has swap leftovers."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    names = set()
    for path in directory.iterdir():
        match = _OURS.fullmatch(path.name) or _LEGACY.fullmatch(path.name)
        if match:
            names.add(match["name"])
    for name in sorted(names):
        recover(directory / name)


def remove(final: Path) -> None:
    """Deletes an artifact directory, whether a symlink to versions or an old-layout directory."""
    final = Path(final)
    if final.is_symlink():
        final.unlink()
    elif final.is_dir():
        shutil.rmtree(final)
    _drop_others(final, None)
