"""Every session key the app uses, declared here, and the helpers that read and write them.

The query lives in ``st.session_state[QUERY]`` as a :class:`Query`, independent of any widget,
so it survives page changes (Streamlit forgets the values of widgets a page does not render).
Sidebar widgets keep their values in plain keys (:func:`remembered`) for the same reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

# -- session keys ------------------------------------------------------------------------------
QUERY = "query"                    #: the current :class:`Query`
QUERY_ERROR = "query_error"        #: why the last upload could not be used
CATALOG = "catalog"                #: the catalogue picked in the sidebar (its name)
PENDING_CATALOG = "pending_catalog"  #: a catalogue just built on the Catalogue page, to pick next run
EDIT_KEYS = "edit_keys"            #: catalogue name -> the edit key this session holds for it (checked on use)
LINK_SEEN = "_link_seen"           #: the (catalogue, key) of the link this session already read
NOTICES = "catalogue_notices"      #: (level, Markdown) messages for the Catalogue page's next run
NEW_KEY = "new_edit_key"           #: (catalogue, key) just issued, shown once on the next run
DUPLICATES_NOTICE = "duplicates_notice"  #: (level, Markdown) of the last "keep this one", for the next run
APPROACH = "approach"              #: the sidebar's approach
K = "k"                            #: the sidebar's number of results
REGIONS = "regions"                #: the sidebar's region-search toggle
CATEGORY = "category"              #: the sidebar's category filter
WHERE = "where"                    #: the sidebar's filters on other columns, as conditions (set each run)
WHERE_PREFIX = "where:"            #: + a column name: that column's filter widget's value
WORDS = "words"                    #: the words searched with (or without) the photo
RECON_RANDOM = "recon_random"      #: the rows the Reconstructions page drew at random
RECON_ITEM = "recon_item"          #: the Reconstructions page's Browse slider
ENGINE_THIS_RUN = "_engine_this_run"  #: the engine the sidebar picked in this run
SIDEBAR_DRAWN = "_sidebar_drawn"   #: set by the frame once it drew the sidebar in this run

#: Keys that belong to one catalogue, dropped when the user picks another.
PER_CATALOG = (RECON_RANDOM, CATEGORY, RECON_ITEM)

ALL_CATEGORIES = "All categories"
DEFAULT_K = 8


def widget_key(widget: str, page: str) -> str:
    """The key of a widget drawn on several pages (``upload``, ``example``, ``crop``, ...)."""
    return f"{widget}-{page}"


def picker_key(key: str) -> str:
    """The widget key of the sidebar picker that edits session key ``key``."""
    return f"{key}-picker"


@dataclasses.dataclass(frozen=True)
class Query:
    """What the user is searching with.

    Attributes:
        kind: ``image`` (a photo) or ``item`` (a catalogue item, "more like this").
        name: What to call it on screen (plain text: shown through ``text.plain``).
        rgb: The decoded photo (``image``), ``(H, W, 3)`` uint8.
        row: The item's row (``item``).
        catalog: The catalogue the row belongs to (``item``).
        item_id: The item's id, checked again before use (``item``).
        box: The region of the photo to search with, ``(x0, y0, x1, y1)``, or None for all of it.
    """

    kind: str
    name: str
    rgb: np.ndarray | None = None
    row: int | None = None
    catalog: str | None = None
    item_id: str | None = None
    box: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "item"):
            raise ValueError(f"`kind` must be 'image' or 'item'. Received: kind={self.kind!r}")


def remembered(key: str, default: Any, on_change: Callable[[], None] | None = None) -> dict[str, Any]:
    """Widget arguments that keep its value in ``st.session_state[key]`` across pages.

    Streamlit forgets a widget's value when a run does not draw it (or draws it from another
    page's script); a plain session key does not, so the widget is seeded from it each run.

    Args:
        key: The session key (one of the names above).
        default: Its value before the user changes it.
        on_change: Called after the value is copied back into ``key``.

    Returns:
        ``key`` and ``on_change`` arguments for the widget.
    """
    if key not in st.session_state:
        st.session_state[key] = default
    st.session_state[picker_key(key)] = st.session_state[key]

    def keep() -> None:
        st.session_state[key] = st.session_state[picker_key(key)]
        if on_change is not None:
            on_change()

    return {"key": picker_key(key), "on_change": keep}


def forget_stale_state() -> None:
    """On a catalogue change: drop what belonged to the old one (item queries, rows, filters)."""
    query = st.session_state.get(QUERY)
    if query is not None and query.kind == "item":
        del st.session_state[QUERY]
    for key in PER_CATALOG:
        st.session_state.pop(key, None)
    for key in [k for k in st.session_state if str(k).startswith(WHERE_PREFIX)]:
        del st.session_state[key]


def search_options() -> tuple[str | None, int, str | None]:
    """The sidebar's approach, k and category (None for all)."""
    category = st.session_state.get(CATEGORY)
    return (st.session_state.get(APPROACH), int(st.session_state.get(K, DEFAULT_K)),
            None if category in (None, ALL_CATEGORIES) else category)


def edit_keys() -> dict[str, str]:
    """The edit keys this session holds, by catalogue name (each checked again before use)."""
    return st.session_state.setdefault(EDIT_KEYS, {})


def notify(level: str, markdown: str) -> None:
    """Keeps a message (``success``, ``info``, ``error``) for the Catalogue page's next run."""
    st.session_state.setdefault(NOTICES, []).append((level, markdown))


def search_where() -> tuple:
    """The sidebar's filters on columns other than the category (``imgsim.Condition`` values)."""
    return tuple(st.session_state.get(WHERE, ()))


def search_words() -> str | None:
    """The words of the text box, or None when it is empty."""
    words = str(st.session_state.get(WORDS) or "").strip()
    return words or None
