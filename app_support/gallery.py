"""The Catalogue page's gallery: every item with its thumbnail and status, searchable by name, paged."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

import imgsim
from app_support.text import plain, shorten

PAGE_SIZE = 24
COLUMNS = 6
ALL_STATUSES = "Every status"
#: The source kinds of a catalogue's manifest, as a merchandiser says them.
SOURCE_WORDS = {"demo": "the demo", "folder": "a folder", "flipkart_csv": "a CSV of image URLs",
                "zip_folder": "a zip of images", "zip_csv": "a zip of a CSV and images",
                "images": "uploaded photos"}


def source_words(kind: object) -> str:
    """A source kind in plain words (an unknown kind is shown as it is)."""
    return SOURCE_WORDS.get(str(kind), str(kind))


def matching(items: pd.DataFrame, text: str, status: str) -> pd.DataFrame:
    """The items whose name or id holds ``text`` (any case) and whose status is ``status``.

    Args:
        items: A catalogue's items table.
        text: What to look for (empty: every item).
        status: A status, or :data:`ALL_STATUSES`.
    """
    shown = items
    if status != ALL_STATUSES:
        shown = shown[shown["status"] == status]
    text = text.strip().lower()
    if text:
        names = shown["name"].astype(str).str.lower()
        ids = shown["id"].astype(str).str.lower()
        shown = shown[names.str.contains(text, regex=False) | ids.str.contains(text, regex=False)]
    return shown


def gallery(catalog: imgsim.Catalog) -> None:
    """Draws the searchable, paged gallery of ``catalog``'s items, failed ones with their reason."""
    items = catalog.items
    left, middle = st.columns([3, 2])
    text = left.text_input("Find items by name", key="gallery-text", placeholder="e.g. shirt")
    statuses = [ALL_STATUSES, *sorted(items["status"].unique())]
    status = middle.selectbox("Status", statuses, key="gallery-status")
    shown = matching(items, text, status)
    pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery-page"))
    st.caption(f"{len(shown)} of {len(items)} items")
    rows = shown.iloc[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    columns = st.columns(COLUMNS)
    for i, row in enumerate(rows.to_dict("records")):
        with columns[i % COLUMNS]:
            name = shorten(row["name"] or row["id"], 40)
            if row["status"] == "ok" and row["thumb"]:
                st.image(str(catalog.root / row["thumb"]), caption=plain(name), width="stretch")
            else:
                st.caption(plain(f"{name}: {row['status']} ({shorten(row['message'], 80)})"))
