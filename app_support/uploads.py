"""Uploads from anonymous browsers: saved for one build or add, deleted after it, never quoted by path.

An upload is written to a fresh folder ``<data dir>/uploads/<uuid>/`` under its own (cleaned)
file name, and the folder is deleted when the build or add that reads it ends, however it ends.
Messages shown in the browser go through :func:`public_message`, which names a server file by
its file name only, so an upload is called what the user called it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imgsim
from app_support.query import MAX_UPLOAD_BYTES
from app_support.text import plain

#: Largest photo accepted from a browser (the Search page's uploader), in MB.
PHOTO_MB = MAX_UPLOAD_BYTES // 2**20
#: Largest zip or CSV accepted from a browser, in MB (``server.maxUploadSize`` in config.toml).
ARCHIVE_MB = 200
#: At most this many files in one "Add".
MAX_FILES = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str, index: int) -> str:
    """A file name made of letters, digits, ``.``, ``_`` and ``-``, keeping the suffix.

    ``index`` makes names from one upload distinct (two photos both called ``photo.jpg``).
    """
    path = Path(Path(str(name)).name)
    stem = _UNSAFE.sub("_", path.stem).strip("._")[:60] or "upload"
    suffix = _UNSAFE.sub("", path.suffix.lower())[:8]
    return f"{stem}{suffix}" if index == 0 else f"{stem}-{index}{suffix}"


@contextlib.contextmanager
def saved(files: list[Any]) -> Iterator[list[Path]]:
    """Writes uploaded files to a fresh folder; yields their paths and deletes the folder after.

    Args:
        files: Streamlit ``UploadedFile`` objects (anything with ``name`` and ``getvalue()``).

    Yields:
        One path per file, in order.
    """
    folder = imgsim.uploads_dir() / uuid.uuid4().hex  # never merges with another upload
    try:
        folder.mkdir(parents=True)
        paths = []
        for i, upload in enumerate(files[:MAX_FILES]):
            path = folder / safe_file_name(upload.name, i)
            path.write_bytes(upload.getvalue())
            paths.append(path)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _server_roots() -> list[str]:
    roots = {imgsim.data_dir(), imgsim.data_dir().resolve()}
    return sorted({str(r) for r in roots}, key=len, reverse=True)


def without_paths(err: object) -> str:
    """``err`` as text with every path under the data directory cut to its file name.

    For tables, which show text as it is; Markdown elements take :func:`public_message`.
    """
    text = str(err)
    for root in _server_roots():
        text = re.sub(re.escape(root) + r"[^\s'\",;:()]*", lambda m: Path(m.group()).name or "(data)", text)
    return text


def public_message(err: object) -> str:
    """``err`` as plain-text Markdown (it may quote an upload) with no server path in it."""
    return plain(without_paths(err))


def discard_failed(target: Path, existed: bool) -> None:
    """Deletes what a failed build left at ``target``, unless a catalogue was there before it.

    A failed first build then publishes nothing and its name can be used again.
    """
    if not existed:
        shutil.rmtree(target, ignore_errors=True)
