"""Edit keys: who may change a catalogue built through the app.

Whoever builds a catalogue in the app gets a random key, shown to them once. Only a salted
scrypt hash of it is stored, in ``CATALOG/edit_key.json`` (written atomically), so a copy of the
data directory does not reveal the key. A catalogue without that file (one the operator built
with the command line, the demo included) has no key and is never editable from the app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from imgsim.storage.artifacts import MANIFEST, now_iso, write_json_atomic
from imgsim.storage.layout import EDIT_KEY_FILE

KIND = "imgsim-edit-key"
FORMAT_VERSION = 1
#: scrypt's cost: about 16 MiB and a few tens of milliseconds per check, so guessing is slow.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
#: Longer input is no key of ours; refusing it unhashed bounds the work one request can cause.
MAX_KEY_CHARS = 128


def _digest(key: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hashlib.scrypt(key.encode("utf-8"), salt=salt, n=params["n"], r=params["r"], p=params["p"],
                          maxmem=256 * 2**20, dklen=32)


def issue_edit_key(root: str | os.PathLike) -> str:
    """Makes a new edit key for the catalogue at ``root``; any earlier key stops working.

    Args:
        root: A catalogue directory.

    Returns:
        The key (URL-safe text). It is not stored; show it to its owner once.

    Raises:
        ValueError: ``root`` holds no catalogue.
        StorageWriteError: The key file could not be written (the previous one is kept).
    """
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise ValueError(f"`root` must be a catalogue directory. Received: {root.name!r}")
    key = secrets.token_urlsafe(24)
    salt = secrets.token_bytes(16)
    write_json_atomic(root / EDIT_KEY_FILE, {
        "kind": KIND, "format_version": FORMAT_VERSION, "algorithm": "scrypt", **SCRYPT,
        "salt": salt.hex(), "hash": _digest(key, salt, SCRYPT).hex(), "created": now_iso(),
    })
    return key


def has_edit_key(root: str | os.PathLike) -> bool:
    """Whether the catalogue at ``root`` was given an edit key (False for operator catalogues)."""
    return (Path(root) / EDIT_KEY_FILE).is_file()


def check_edit_key(root: str | os.PathLike, key: object) -> bool:
    """Whether ``key`` is the edit key of the catalogue at ``root`` (compared in constant time).

    Args:
        root: A catalogue directory.
        key: What a user gave (any value: only text of a plausible length is hashed).

    Returns:
        True only for the catalogue's current key; False for any other value, for a catalogue
        without a key (an operator's) and for a missing or damaged key file.
    """
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        return False
    try:
        record = json.loads((Path(root) / EDIT_KEY_FILE).read_text(encoding="utf-8"))
        if record.get("kind") != KIND or record.get("algorithm") != "scrypt":
            return False
        params = {name: int(record[name]) for name in SCRYPT}
        salt, stored = bytes.fromhex(record["salt"]), bytes.fromhex(record["hash"])
        return hmac.compare_digest(_digest(key, salt, params), stored)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
