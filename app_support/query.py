"""The query: upload, camera and example inputs, the remembered query, and running it."""

from __future__ import annotations

import random

import numpy as np
import streamlit as st

import imgsim
from app_support import state
from app_support.state import Query, widget_key
from app_support.text import plain

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "heic", "heif", "avif", "gif", "bmp", "tiff", "tif"]
#: Largest photo accepted from a browser, in bytes (the server's own limit is also in config.toml).
MAX_UPLOAD_BYTES = 25 * 2**20
#: Width of the query picture, in pixels: small, so that results start in a phone's first screen.
QUERY_SIDE = 120


def _take_upload(key: str, name: str) -> None:
    """Decodes the file just given to widget ``key`` and makes it the query."""
    upload = st.session_state.get(key)
    if upload is None:
        return
    if getattr(upload, "size", 0) > MAX_UPLOAD_BYTES:
        st.session_state[state.QUERY_ERROR] = (f"That file is {upload.size / 2**20:.0f} MB; photos up to "
                                               f"{MAX_UPLOAD_BYTES // 2**20} MB are accepted.")
        st.session_state.pop(state.QUERY, None)
        return
    try:
        rgb = imgsim.decode_query(upload)
    except imgsim.ImageDecodeError as err:
        st.session_state[state.QUERY_ERROR] = f"That file cannot be used: {err}"
        st.session_state.pop(state.QUERY, None)  # the error replaces the previous photo's results
        return
    st.session_state.pop(state.QUERY_ERROR, None)
    st.session_state[state.QUERY] = Query("image", getattr(upload, "name", None) or name, rgb=rgb)


def set_item_query(engine: imgsim.Engine, row: int) -> None:
    """Makes catalogue item ``row`` the query."""
    st.session_state.pop(state.QUERY_ERROR, None)
    st.session_state[state.QUERY] = Query("item", str(engine.items["name"].iloc[row]) or "Catalogue item",
                                          row=int(row), catalog=engine.catalog.name,
                                          item_id=str(engine.items["id"].iloc[row]))


def query_widgets(engine: imgsim.Engine, page: str) -> None:
    """Upload, camera and example inputs; the latest one used becomes the query."""
    with st.container(key="query-inputs"):  # compact on a phone (assets/app.css): results in the first screen
        st.text_input("Words", **state.remembered(state.WORDS, ""), placeholder="Words: blue casual shirt",
                      help="Searched in the catalogue's names, categories and other text; with a photo, "
                           "they re-rank what looks like it (“this, but in blue”).")
        upload = widget_key("upload", page)
        st.file_uploader("Upload a photo", type=UPLOAD_TYPES, key=upload, on_change=_take_upload,
                         max_upload_size=MAX_UPLOAD_BYTES // 2**20, args=(upload, "Your photo"),
                         help="JPEG, PNG, WebP, HEIC (iPhone), AVIF, GIF, BMP or TIFF")
        cols = st.columns(2, vertical_alignment="center")
        cols[0].button("Try an example", icon=":material/casino:", width="stretch", key=widget_key("example", page),
                       on_click=lambda: set_item_query(engine, random.randrange(len(engine.items))))
        use_camera = cols[1].toggle("Use the camera", key=widget_key("use-camera", page))
    if use_camera:
        camera = widget_key("cam", page)
        st.camera_input("Take a photo", key=camera, on_change=_take_upload, args=(camera, "Camera photo"))


def current_query(engine: imgsim.Engine) -> Query | None:
    """The remembered query if it applies to ``engine``'s catalogue, else None (errors shown)."""
    if st.session_state.get(state.QUERY_ERROR):
        st.error(plain(st.session_state[state.QUERY_ERROR]))
    query = st.session_state.get(state.QUERY)
    if query is None:
        return None
    if query.kind == "item":
        rows = engine.items["id"].to_numpy()
        if (query.catalog != engine.catalog.name or query.row is None or not 0 <= query.row < len(rows)
                or rows[query.row] != query.item_id):
            del st.session_state[state.QUERY]  # it belonged to another catalogue or an older version
            return None
    return query


def run_query(engine: imgsim.Engine, query: Query | None, approach: str | None, k: int,
              category: str | None) -> imgsim.SearchResult | None:
    """Runs one search with the sidebar's filters and the words, turning user-fixable problems
    into messages. Without a query, the words alone are searched (None when there are none)."""
    where, words = state.search_where(), state.search_words()
    try:
        if query is None:
            return engine.search_text(words, k, category=category, where=where) if words else None
        if query.kind == "item":
            return engine.search_item(query.row, approach, k, category=category, where=where, text=words)
        regions = None if st.session_state.get(state.REGIONS, True) else False
        return engine.search(query.rgb, approach, k, category=category, box=query.box, regions=regions,
                             where=where, text=words)
    except (ValueError, imgsim.ImgsimError) as err:
        st.error(plain(err))
        return None


def show_query(query: Query, result: imgsim.SearchResult | None) -> None:
    """The query as the model sees it (orientation fixed, cropped, padded and resized).

    For a photo searched by regions, the photo itself with the automatic product box drawn on it.
    """
    if result is None:
        return
    if query.kind == "image" and result.auto_box is not None and query.box is None:
        st.image(with_box(query.rgb, result.auto_box), width=QUERY_SIDE,
                 caption=plain(f"{query.name} — the product box found automatically "
                               f"({result.regions} regions searched)"))
    else:
        st.image(result.query_image, caption=plain(f"{query.name} — as the model sees it"), width=QUERY_SIDE)


def box_note(query: Query) -> str:
    """What a result caption adds for the query's box ("" for region search)."""
    if query.box is None:
        return ""
    h, w = query.rgb.shape[:2]
    return " · searched with the whole photo" if query.box == (0, 0, w, h) else " · searched with your box"


def with_box(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A copy of ``rgb`` (``(H, W, 3)`` uint8) with ``box`` drawn on it."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    width = max(2, round(max(im.size) / 150))
    ImageDraw.Draw(im).rectangle(box, outline=(47, 111, 222), width=width)
    return np.asarray(im)
