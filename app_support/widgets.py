"""Widgets the pages share: the result grid and the crop-box editor."""

from __future__ import annotations

import dataclasses

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

    The automatic box is where the box starts. The box is kept in the query (session state), so
    it survives page changes; "Search the whole photo" drops it.
    """
    if query.kind != "image":
        return
    if not st.toggle("Adjust the product box", key=widget_key("crop", page),
                     help="Draw a box around the product to search with that part of the photo only"):
        if query.box is not None and st.button("Search the whole photo", key=widget_key("uncrop", page)):
            st.session_state[state.QUERY] = dataclasses.replace(query, box=None)
            st.rerun()
        return
    from PIL import Image
    from streamlit_cropper import st_cropper

    h, w = query.rgb.shape[:2]
    scale = CROP_EDITOR_SIDE / max(h, w)
    shown = Image.fromarray(query.rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))))
    start = query.box or (result.auto_box if result is not None else None) or (w // 5, h // 5, 4 * w // 5, 4 * h // 5)
    x0, y0, x1, y1 = (round(v * scale) for v in start)
    rect = st_cropper(shown, realtime_update=False, default_coords=(x0, x1, y0, y1), box_color="#2f6fde",
                      return_type="box", should_resize_image=False, key=f"cropper-{page}-{id(query.rgb)}")
    st.caption("Drag the box or its corners, then double-click it to search with that part of the photo.")
    box = box_from_editor(rect, scale, (w, h))
    slack = 1 + 1 / scale  # one shown pixel either way is the editor's rounding, not a change
    if box is not None and (query.box is None or max(abs(a - b) for a, b in zip(box, query.box)) > slack):
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


def card_text(item: dict, unit: str) -> str:
    """A result card's Markdown: rank in bold, then name, category, price and score as plain text.

    The name stays outside the bold markers, so a name with ``**`` in it (or one cut short
    before a space) can never leave broken bold markup behind.
    """
    name = shorten(str(item.get("name") or "").strip() or str(item["id"]), CARD_NAME_CHARS)
    details = [plain(c) for c in (item.get("category"), item.get("price") and f"₹{item['price']}") if c]
    return f"**{item['rank']}.** {plain(name)}  \n{' · '.join(details)}  \n{unit} {item['score']:.3f}"


#: What a result card calls its score, by the result's metric.
SCORE_UNITS = {"cosine": "similarity", "euclidean": "distance", "bm25": "words score", "photo+words": "score"}


def result_grid(engine: imgsim.Engine, result: imgsim.SearchResult, key: str, columns: int = 4,
                query: Query | None = None) -> None:
    """Thumbnails with name, category, price and score; each can become the next query.

    With a photo query, a card whose score came from a part of the photo shows that part on
    the photo when tapped ("Matched part").
    """
    if result.items.empty:
        st.info("No item matches (are the filters too narrow?).")
        return
    unit = SCORE_UNITS.get(result.metric, "score")
    rows = result.items.to_dict("records")
    photo = query.rgb if query is not None and query.kind == "image" and query.box is None else None
    for start in range(0, len(rows), columns):
        cols = st.columns(columns)
        for col, item in zip(cols, rows[start:start + columns]):
            with col:
                st.image(item["thumb_path"], width="stretch")
                st.markdown(card_text(item, unit))
                box = item.get("matched_box")
                if photo is not None and box is not None:
                    with st.popover("Matched part", icon=":material/crop_free:", width="stretch"):
                        st.image(with_box(photo, box), width="stretch",
                                 caption="The part of your photo that gave this score")
                st.button("More like this", key=f"{key}-more-{item['row']}", on_click=set_item_query,
                          args=(engine, item["row"]), width="stretch")
