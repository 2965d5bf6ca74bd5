"""The Duplicates page's data and its one action: near-duplicate groups, and "keep this one".

The groups come from :func:`imgsim.find_duplicates`, computed once per catalogue version and
process (``st.cache_data``: an add or remove makes a new version, so a stale group is never
shown). Each member carries what tells it from the others: its original's pixel size and bytes
(when the source is a file on this server), its shape against the group's largest member (a
crop or padding changes it), and the pairs that joined it to the group, with their reason and
score. "Keep this one" removes the group's other items through the ordinary
:func:`imgsim.remove_items` and :func:`imgsim.refresh`, only for a session holding the
catalogue's edit key (:mod:`app_support.edit_rights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

import imgsim
from app_support import edit_rights, state
from app_support.engine import engine_for
from app_support.text import bold, plain
from app_support.uploads import public_message

#: A member whose width/height ratio differs from the group's largest member's by more than
#: this share was cropped or padded (a resize or re-encoding keeps the shape).
SHAPE_TOLERANCE = 0.03


def original_size(source: str) -> tuple[int, int, int] | None:
    """``(width, height, bytes)`` of an item's original when it is a readable file on this server."""
    if not source or "://" in source:
        return None
    path = Path(source)
    try:
        if not path.is_file():
            return None
        rgb = imgsim.decode_image(path)
        return int(rgb.shape[1]), int(rgb.shape[0]), int(path.stat().st_size)
    except (imgsim.ImgsimError, OSError, ValueError):
        return None


def _member(items: pd.DataFrame, row: int) -> dict[str, Any]:
    item = items.iloc[row]
    size = original_size(str(item.get("source", "")))
    return {"row": int(row), "id": str(item["id"]), "name": str(item["name"] or item["id"]),
            "thumb": str(item["thumb_path"]), "width": size[0] if size else None,
            "height": size[1] if size else None, "bytes": size[2] if size else None, "pairs": []}


def differences(members: list[dict[str, Any]]) -> None:
    """Adds ``share`` (pixels against the group's largest, 0-1) and ``reshaped`` (cropped or
    padded against it) to members whose original size is known."""
    sized = [m for m in members if m["width"]]
    if not sized:
        return
    largest = max(sized, key=lambda m: m["width"] * m["height"])
    ratio = largest["width"] / largest["height"]
    for m in sized:
        m["share"] = m["width"] * m["height"] / (largest["width"] * largest["height"])
        m["reshaped"] = abs(m["width"] / m["height"] / ratio - 1) > SHAPE_TOLERANCE


@st.cache_data(show_spinner="Looking for near-duplicates (once per version of the catalogue)…", max_entries=8)
def duplicate_groups(path: str, version: str, save: bool) -> dict[str, Any]:
    """The near-duplicate groups of the catalogue at ``path`` in its state ``version``.

    Args:
        path: The catalogue's directory.
        version: Its version (the cache key: a change computes the groups again).
        save: Keep a newly calibrated threshold in the catalogue (only for its key holder).

    Returns:
        ``{"groups": [[member, ...], ...], "threshold", "seconds", "n"}``; a member is
        ``{"row", "id", "name", "thumb", "width", "height", "bytes", "pairs", "share", "reshaped"}``,
        its ``pairs`` ``{"other", "reason", "score", "cosine"}`` (``other`` an item's name).
    """
    engine = engine_for(Path(path))
    report = imgsim.find_duplicates(engine, save=save)
    items = engine.items
    groups = []
    for rows in report.groups:
        members = {r: _member(items, r) for r in rows}
        for pair in report.pairs:
            a, b = members.get(pair["a"]), members.get(pair["b"])
            if a is None or b is None:
                continue
            for one, other in ((a, b), (b, a)):
                one["pairs"].append({"other": other["name"], "reason": pair["reason"], "score": pair["score"],
                                     "cosine": pair["cosine"]})
        group = list(members.values())
        differences(group)
        groups.append(group)
    return {"groups": groups, "threshold": report.threshold.score, "seconds": report.seconds, "n": len(items)}


def describe(member: dict[str, Any]) -> list[str]:
    """A member's differences as plain-text Markdown lines (pixel size, bytes, shape, pairs)."""
    lines = []
    if member["width"]:
        size = f"{member['width']}×{member['height']} px · {member['bytes'] / 1024:,.0f} KB"
        if member.get("share", 1.0) < 0.999:
            size += f" · {member['share']:.0%} of the largest's pixels"
        if member.get("reshaped"):
            size += " · another shape (cropped or padded)"
        lines.append(plain(size))
    else:
        lines.append("original size unknown (not a file on this server)")
    for pair in member["pairs"]:
        how = "the same bytes as" if pair["reason"] == "same bytes" else \
            f"an altered copy (score {pair['score']:.3f}, cosine {pair['cosine']:.3f}) of"
        lines.append(f"{plain(how)} {bold(pair['other'])}")
    return lines


def keep_only(name: str, root: str, ids: list[str], keep: str) -> None:
    """The "keep this one" action: removes ``ids`` but ``keep`` from catalogue ``name``.

    Refused (a message, nothing removed) unless this session holds the catalogue's edit key;
    the result is left for the page's next run in ``state.DUPLICATES_NOTICE``.
    """
    others = [i for i in ids if i != keep]
    if not edit_rights.may_edit(name):
        st.session_state[state.DUPLICATES_NOTICE] = (
            "error", f"{bold(name)} is read-only here: unlock it with its edit key on the Catalogue page first.")
        return
    try:
        changed, removed = imgsim.remove_items(root, others)
        imgsim.refresh(changed)
    except (ValueError, imgsim.ImgsimError) as err:
        st.session_state[state.DUPLICATES_NOTICE] = ("error", "The removal stopped: " + public_message(err))
        return
    st.session_state[state.DUPLICATES_NOTICE] = ("success", f"Kept one, {removed} removed.")
