"""The one module that knows every path inside a catalogue directory, and where catalogues live.

::

    <data dir>/catalogs/<name>/    a catalogue (see below); <data dir> is $IMGSIM_DATA_DIR
    <data dir>/uploads/<uuid>/     an upload from the app, deleted once its build or add ends
    <data dir>/sources/<sha256>/   a zip unpacked outside any catalogue

    CATALOG/
      manifest.json                the commit point (names the items table)
      items-<hash>.parquet         the items table
      thumbs/  downloads/          decoded thumbnails; downloaded originals
      sources/<sha256>/            an unpacked zip source
      stores/<approach>/           an approach's store (a link to its current version)
      stores/<approach>.ann/       its approximate index (HNSW)
      stores/<approach>.ivfpq/     its compressed index (IVF-PQ), for the biggest stores
      models/<name>/               a learned model (an approach's, or the duplicates threshold)
      models/match-<approach>/     an approach's no-good-match line (imgsim.calibration)
      backend.json                 where the vectors are served from, after an export
      edit_key.json                the salted hash of the app's edit key
      .writer.lock                 held while a change runs

Every other module asks here rather than joining the names itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MANIFEST = "manifest.json"
BACKEND_FILE = "backend.json"
EDIT_KEY_FILE = "edit_key.json"
LOCK_FILE = ".writer.lock"
#: Folders whose artifacts are swapped in as versions (see :mod:`imgsim.storage.swap`).
SWAPPED = ("stores", "models")
CATALOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def data_dir() -> Path:
    """Where catalogues live: ``$IMGSIM_DATA_DIR``, else ``$XDG_DATA_HOME/imgsim``."""
    env = os.environ.get("IMGSIM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "imgsim"


def catalogs_dir() -> Path:
    """``<data dir>/catalogs``."""
    return data_dir() / "catalogs"


def default_catalog_path(name: str = "demo") -> Path:
    """``<data dir>/catalogs/<name>``."""
    return catalogs_dir() / name


def uploads_dir() -> Path:
    """``<data dir>/uploads``: the app's uploads, each in a folder of its own while its build runs."""
    return data_dir() / "uploads"


def valid_catalog_name(name: str) -> str:
    """``name`` stripped, if it is a safe catalogue name (letters, digits, ``-`` and ``_``).

    Raises:
        ValueError: Empty, too long, or holding other characters (``/``, ``..``, spaces, ...).
    """
    name = name.strip()
    if not CATALOG_NAME.fullmatch(name):
        raise ValueError("a catalogue name is 1-64 letters, digits, '-' or '_', starting with a letter "
                         f"or digit. Received: {name[:80]!r}")
    return name


def manifest_path(root: Path) -> Path:
    """``CATALOG/manifest.json``."""
    return Path(root) / MANIFEST


def thumbs_dir(root: Path) -> Path:
    """``CATALOG/thumbs``."""
    return Path(root) / "thumbs"


def downloads_dir(root: Path) -> Path:
    """``CATALOG/downloads``."""
    return Path(root) / "downloads"


def sources_dir(root: Path) -> Path:
    """``CATALOG/sources``: where a zip source is unpacked."""
    return Path(root) / "sources"


def store_dir(root: Path, approach: str) -> Path:
    """``CATALOG/stores/<approach>``."""
    return Path(root) / "stores" / approach


def ann_dir(store_root: Path, approach: str) -> Path:
    """``CATALOG/stores/<approach>.ann``, beside the store at ``store_root``."""
    return Path(store_root).with_name(f"{approach}.ann")


def ivfpq_dir(store_root: Path, approach: str) -> Path:
    """``CATALOG/stores/<approach>.ivfpq``, beside the store at ``store_root``."""
    return Path(store_root).with_name(f"{approach}.ivfpq")


def model_dir(root: Path, name: str) -> Path:
    """``CATALOG/models/<name>``."""
    return Path(root) / "models" / name


def match_dir(root: Path, approach: str) -> Path:
    """``CATALOG/models/match-<approach>``: the approach's no-good-match line."""
    return model_dir(root, f"match-{approach}")


def backend_file(root: Path) -> Path:
    """``CATALOG/backend.json``."""
    return Path(root) / BACKEND_FILE


def edit_key_file(root: Path) -> Path:
    """``CATALOG/edit_key.json``."""
    return Path(root) / EDIT_KEY_FILE


def lock_file(root: Path) -> Path:
    """``CATALOG/.writer.lock``."""
    return Path(root) / LOCK_FILE
