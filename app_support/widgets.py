"""Widgets the pages share: the result grid (with "Why?") and the crop-box editor."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import streamlit as st

import imgsim
from app_support import state
from app_support.query import set_item_query, with_box
from app_support.state import Query, widget_key
from app_support.text import plain, shorten

#: Longest side of the crop editor's picture: fits a phone screen (390 px) with its margins.
CROP_EDITOR_SIDE = 340
#: Longest item name on a result card, in characters.
CARD_NAME_CHARS = 60


def crop_box_editor(query: Query, result: imgsim.SearchResult | None, page: str) -> None:
    """Lets the user draw or adjust a box around the product and search with that region only.

    Opening the editor changes nothing: the box starts where the automatic box is, and the
    search changes only when "Search this box" (the drawn box) or "Whole photo" (all of the
    photo, no regions) is tapped. The box is kept in the query (session state), so it survives
    page changes; "Automatic box" goes back to region search.
    """
    if query.kind != "image":
        return
    h, w = query.rgb.shape[:2]
    if not st.toggle("Adjust the product box", key=widget_key("crop", page),
                     help="Draw a box around the product to search with that part of the photo only"):
        if query.box is not None and st.button("Automatic box", key=widget_key("uncrop", page),
                                               help="Find the product in the photo again"):
            _apply_box(query, None)
        return
    from PIL import Image
    from streamlit_cropper import st_cropper

    scale = CROP_EDITOR_SIDE / max(h, w)
    shown = Image.fromarray(query.rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))))
    start = query.box or (result.auto_box if result is not None else None) or (w // 5, h // 5, 4 * w // 5, 4 * h // 5)
    x0, y0, x1, y1 = (round(v * scale) for v in start)
    rect = st_cropper(shown, realtime_update=True, default_coords=(x0, x1, y0, y1), box_color="#2f6fde",
                      return_type="box", should_resize_image=False, key=f"cropper-{page}-{id(query.rgb)}")
    st.caption("Drag the box or its corners, then tap “Search this box”.")
    left, right = st.columns(2)
    if left.button("Search this box", key=widget_key("apply-box", page), type="primary", width="stretch"):
        _apply_box(query, box_from_editor(rect, scale, (w, h)) or start)
    if right.button("Whole photo", key=widget_key("whole-photo", page), width="stretch",
                    help="Search with all of the photo, without looking for the product in it"):
        _apply_box(query, whole_photo(query))


def whole_photo(query: Query) -> tuple[int, int, int, int]:
    """The box that covers all of ``query``'s photo."""
    h, w = query.rgb.shape[:2]
    return (0, 0, w, h)


def _apply_box(query: Query, box: tuple[int, int, int, int] | None) -> None:
    if box != query.box:
        st.session_state[state.QUERY] = dataclasses.replace(query, box=box)
        st.rerun()


def box_from_editor(rect: dict | None, scale: float, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The editor's ``{left, top, width, height}`` (shown pixels) as a box in the photo's pixels."""
    if not rect or rect.get("width", 0) < 2 or rect.get("height", 0) < 2:
        return None
    w, h = size
    x0 = max(0, min(w - 2, round(rect["left"] / scale)))
    y0 = max(0, min(h - 2, round(rect["top"] / scale)))
    x1 = max(x0 + 2, min(w, round((rect["left"] + rect["width"]) / scale)))
    y1 = max(y0 + 2, min(h, round((rect["top"] + rect["height"]) / scale)))
    return (x0, y0, x1, y1)


def card_text(item: dict) -> str:
    """A result tile's name line: rank in bold, then the name (two lines at most) as plain text.

    The name stays outside the bold markers, so a name with ``**`` in it (or one cut short
    before a space) can never leave broken bold markup behind.
    """
    return f"**{item['rank']}.** {plain(shorten(item_name(item), CARD_NAME_CHARS))}"


def item_name(item: dict) -> str:
    """A result's name, or its id when it has none (unescaped)."""
    return str(item.get("name") or "").strip() or str(item["id"])


def detail_text(item: dict, unit: str, shared: bool = False) -> str:
    """A result tile's second line: category, price when known and score, as plain text."""
    details = [plain(c) for c in (item.get("category"), item.get("price") and f"₹{item['price']}") if c]
    details.append(f"{unit} {item['score']:.3f}")
    return ("● shared · " if shared else "") + " · ".join(details)


#: What a result card calls its score, by the result's metric.
SCORE_UNITS = {"cosine": "similarity", "euclidean": "distance", "bm25": "words score", "photo+words": "score"}
#: Side of a result tile, in pixels: a stored thumbnail's longest side (256).
TILE_SIDE = 256
#: A thumbnail is never enlarged more than this on a tile.
MAX_ENLARGE = 2.0


@functools.lru_cache(maxsize=512)  # thumbnails are named by their content hash: a path never changes
def tile(path: str, side: int = TILE_SIDE) -> np.ndarray:
    """The thumbnail at ``path`` centred on a white ``side`` x ``side`` square.

    It is shrunk to fit, or enlarged at most :data:`MAX_ENLARGE` times (a 40 px stamp stays
    small and sharp instead of filling the tile with blur).

    Returns:
        ``(side, side, 3)`` uint8.
    """
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = min(side / max(im.size), MAX_ENLARGE)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS) if size != im.size else im
        square = Image.new("RGB", (side, side), "white")
        square.paste(im, ((side - size[0]) // 2, (side - size[1]) // 2))
    return np.asarray(square)


def _query_for_explain(engine: imgsim.Engine, query: Query) -> np.ndarray | str:
    """The picture a heat map compares with: the photo (its box when one is applied) or the item's thumbnail."""
    if query.kind == "item":
        return str(engine.catalog.root / engine.items["thumb"].iloc[query.row])
    if query.box is None:
        return query.rgb
    x0, y0, x1, y1 = query.box
    return query.rgb[y0:y1, x0:x1]


@st.dialog("Why similar", width="large")
def why_dialog(engine: imgsim.Engine, query: Query, item: dict) -> None:
    """The why-similar heat map of ``item`` for ``query``, computed when the dialog opens."""
    st.markdown(plain(item_name(item)))
    try:
        with st.spinner("Comparing the two pictures…"):
            explanation = imgsim.explain(engine, _query_for_explain(engine, query), str(item["id"]))
    except (ValueError, imgsim.ImgsimError) as err:
        st.error(plain(err))
        return
    st.image(explanation.image(WHY_HEIGHT), width="stretch",
             caption="Left: your query, right: the result; warm colours are the parts that matched")


#: Height of the why-similar picture, in pixels.
WHY_HEIGHT = 320


def result_grid(engine: imgsim.Engine, result: imgsim.SearchResult, key: str, columns: int = 4,
                query: Query | None = None, shared: set[str] | None = None) -> None:
    """Same-size square tiles with name, category, price and score; each can become the next query.

    The tiles stay two to a row on a phone (``assets/app.css`` keeps the columns of a
    ``results`` container from stacking). With a photo query, a tile whose score came from a
    part of the photo shows that part when tapped ("Matched part"); with any query, "Why?"
    opens the heat map of what matched.

    Args:
        engine: The engine the result came from.
        result: What to show.
        key: Makes the widget keys of this grid unique on the page.
        columns: Tiles per row on a wide screen (an even number: a phone shows two).
        query: The query, for "Matched part" and "Why?".
        shared: Ids to mark as shared (Compare: found by every approach).
    """
    if result.items.empty:
        st.info("No item matches (are the filters too narrow?).")
        return
    unit = SCORE_UNITS.get(result.metric, "score")
    rows = result.items.to_dict("records")
    photo = query.rgb if query is not None and query.kind == "image" and query.box is None else None
    with st.container(key=f"results-{key}"):
        for start in range(0, len(rows), columns):
            cols = st.columns(columns)
            for col, item in zip(cols, rows[start:start + columns]):
                with col:
                    _tile(engine, item, unit, key, photo, query, shared)


def _tile(engine: imgsim.Engine, item: dict, unit: str, key: str, photo: np.ndarray | None,
          query: Query | None, shared: set[str] | None) -> None:
    st.image(tile(str(item["thumb_path"])), width="stretch")
    st.markdown(card_text(item), help=plain(item_name(item)))
    st.caption(detail_text(item, unit, shared is not None and str(item["id"]) in shared))
    box = item.get("matched_box")
    if photo is not None and box is not None:
        with st.popover("Matched part", icon=":material/crop_free:", width="stretch"):
            st.image(with_box(photo, box), width="stretch", caption="The part of your photo that gave this score")
    left, right = st.columns([3, 2])
    left.button("More like this", key=f"{key}-more-{item['row']}", on_click=set_item_query,
                args=(engine, item["row"]), width="stretch")
    if query is not None and right.button("Why?", key=f"{key}-why-{item['row']}", width="stretch",
                                          help="Which parts of the two pictures matched"):
        why_dialog(engine, query, item)
