"""What every page shares: the cached engine, the sidebar, the remembered query, the result grid.

Streamlit caching lives here and only here: one engine per catalogue per process
(``st.cache_resource``), so models and stores load once, not per rerun or per page.

The query lives in ``st.session_state["query"]`` as a :class:`Query`, independent of any widget,
so it survives page changes (Streamlit forgets the values of widgets a page does not render).
The sidebar's widgets are drawn once, by the entry script, so their values persist too.
"""

from __future__ import annotations

import dataclasses
import gc
import random
from pathlib import Path

import numpy as np
import streamlit as st

import imgsim

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "heic", "heif", "avif", "gif", "bmp", "tiff", "tif"]
ASSETS = Path(__file__).resolve().parents[1] / "assets"
MAX_K = 100
#: Largest photo accepted from a browser, in bytes (the server's own limit is also in config.toml).
MAX_UPLOAD_BYTES = 25 * 2**20


@dataclasses.dataclass(frozen=True)
class Query:
    """What the user is searching with.

    Attributes:
        kind: ``image`` (a photo) or ``item`` (a catalogue item, "more like this").
        name: What to call it on screen.
        rgb: The decoded photo (``image``).
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


def plain(text: str) -> str:
    """``text`` with Markdown's special characters escaped (catalogue text is data, not markup)."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>~$" else c for c in text)


# -- the engine ------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading the catalogue and its models (first time only)…", max_entries=4)
def _engine(path: str, version: str) -> imgsim.Engine:
    gc.unfreeze()  # an engine evicted from this cache (a rebuilt catalogue) can then be collected
    engine = imgsim.Engine.open(path)
    engine.warm_up()
    # Streamlit runs a full garbage collection after every script run, twice (its own
    # postScriptGC and Keras's clear_session); over TensorFlow's ~470k objects each costs ~0.5 s
    # of CPU. Frozen objects are skipped by every later collection, and the models live as long
    # as the process anyway.
    gc.collect()
    gc.freeze()
    return engine


def _keep_keras_state() -> None:
    """Stops Streamlit from calling ``keras.backend.clear_session()`` after every script run.

    Streamlit does it for scripts that build Keras models on each run; here models are built
    once per process (``st.cache_resource``) and shared by all sessions, and the call empties
    TensorFlow's kernel cache, which makes the next query of every session ~1 s slower (CPU)
    while its kernels are made again. Matplotlib figures are still closed as Streamlit does.
    """
    from streamlit.runtime.scriptrunner import script_runner

    def clean_problem_modules() -> None:
        import sys

        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")

    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = clean_problem_modules


_keep_keras_state()


def engine_for(path: Path) -> imgsim.Engine:
    """The process-wide engine of the catalogue at ``path`` (a new one once it is rebuilt)."""
    return _engine(str(path), imgsim.current_version(path))


@st.cache_data(show_spinner="Scoring every item against all the others…", max_entries=16)
def evaluation(path: str, version: str, label_column: str) -> dict:
    """Leave-one-out report at k = 10 with precision curves to k = 20 (cached per catalogue state)."""
    return engine_for(Path(path)).evaluate(label_column, 10, curve_k=20)


@st.cache_data(show_spinner=False, max_entries=16)
def embedding_map(path: str, version: str, approach: str):
    """A 2-D map of the catalogue in one approach's space (cached per catalogue state)."""
    return engine_for(Path(path)).embedding_map(approach)


def build_with_progress(source: str, out: Path, options: imgsim.BuildOptions | None = None) -> bool:
    """Runs a build with a progress bar per stage; shows errors in plain words."""
    bar = st.progress(0.0, text="Starting…")
    labels = {"ingest": "Importing images", "pretrained": "Indexing with the pretrained CNN",
              "decode": "Preparing training images", "train": "Training the autoencoder",
              "autoencoder": "Indexing with the autoencoder", "tuned": "Tuning on the labels"}

    def stage(name: str):
        def report(done: int, total: int, message: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=f"{labels.get(name, name)}: {done}/{total} {message}")
        return report

    try:
        imgsim.build_catalog(source, out, options or imgsim.BuildOptions(), progress=stage)
    except (imgsim.ArtifactError, imgsim.SourceError, ValueError, OSError) as err:
        bar.empty()
        st.error(f"The build stopped: {err}")
        return False
    bar.progress(1.0, text="Done")
    return True


def sidebar_catalogue() -> imgsim.Engine | None:
    """The catalogue picker (drawn once, by the entry script); builds the demo on the first run."""
    catalogs = imgsim.list_catalogs()
    if not catalogs:
        if not imgsim.demo_available():
            st.info("No catalogue yet, and the demo catalogue's pictures are not installed on this "
                    "server. Open the **Catalogue** page and import a zip of images or a CSV of image URLs.")
            return None
        st.info("First run: building the demo catalogue (about 700 pictures; a few minutes, once).")
        if not build_with_progress("demo", imgsim.default_demo_path()):
            return None
        catalogs = imgsim.list_catalogs()
    names = [p.name for p in catalogs]
    pending = st.session_state.pop("pending_catalog", None)  # just built on the Catalogue page
    if pending in names and pending != st.session_state.get("catalog"):
        st.session_state["catalog"] = pending
        _forget_stale_state()
    if st.session_state.get("catalog") not in names:
        st.session_state["catalog"] = "demo" if "demo" in names else names[0]
    chosen = st.sidebar.selectbox("Catalogue", names, **remembered("catalog", names[0], _forget_stale_state))
    try:
        return engine_for(catalogs[names.index(chosen)])
    except (imgsim.ArtifactError, OSError, ValueError) as err:
        st.error(f"Catalogue {chosen} cannot be opened: {err}")
        return None


def remembered(key: str, default, on_change=None) -> dict:
    """Widget arguments that keep its value in ``st.session_state[key]`` across pages.

    Streamlit forgets a widget's value when a run does not draw it (or draws it from another
    page's script); a plain session key does not, so the widget is seeded from it each run.
    """
    if key not in st.session_state:
        st.session_state[key] = default
    st.session_state[f"{key}-picker"] = st.session_state[key]

    def keep() -> None:
        st.session_state[key] = st.session_state[f"{key}-picker"]
        if on_change is not None:
            on_change()

    return {"key": f"{key}-picker", "on_change": keep}


def _forget_stale_state() -> None:
    """On a catalogue change: drop what belonged to the old one (item queries, rows, filters)."""
    query = st.session_state.get("query")
    if query is not None and query.kind == "item":
        del st.session_state["query"]
    for key in ("recon_random", "category", "recon_item"):
        st.session_state.pop(key, None)


def sidebar_search_options(engine: imgsim.Engine) -> None:
    """Approach, k and category pickers in the sidebar (drawn once, by the entry script)."""
    available = engine.approaches()
    if not available:
        st.sidebar.warning("This catalogue has no index yet: rebuild it on the Catalogue page.")
    else:
        if st.session_state.get("approach") not in available:
            st.session_state["approach"] = available[0]
        st.sidebar.radio("Approach", available, format_func=engine.label, **remembered("approach", available[0]),
                         help="Used on the Search page; Compare shows them all.")
    st.sidebar.slider("Results (k)", 1, MAX_K, **remembered("k", 8))
    st.sidebar.toggle("Find the product in the photo", **remembered("regions", True),
                      help="Region search: the photo's regions and an automatic product box are searched "
                           "too, so a product photographed in a scene is found. Off: the whole photo only.")
    categories = ["All categories", *engine.categories()]
    if st.session_state.get("category") not in categories:
        st.session_state["category"] = categories[0]
    st.sidebar.selectbox("Category", categories, **remembered("category", categories[0]))


def search_options() -> tuple[str | None, int, str | None]:
    """The sidebar's approach, k and category (None for all)."""
    category = st.session_state.get("category")
    return (st.session_state.get("approach"), int(st.session_state.get("k", 8)),
            None if category in (None, "All categories") else category)


def draw_sidebar() -> imgsim.Engine | None:
    """The shared sidebar (catalogue, approach, k, category); returns the chosen engine.

    The entry script draws it once per run, before the page, so its values persist across
    pages (Streamlit's own multipage pattern).
    """
    engine = sidebar_catalogue()
    if engine is not None:
        sidebar_search_options(engine)
    st.session_state["_engine_this_run"] = engine
    st.session_state["_sidebar_drawn"] = True
    return engine


def current_engine() -> imgsim.Engine | None:
    """The engine picked in the sidebar for this run (None when there is no catalogue).

    Draws the sidebar first when the entry script has not (a page run on its own, as
    Streamlit's test harness can do).
    """
    if st.session_state.pop("_sidebar_drawn", False):
        return st.session_state.get("_engine_this_run")
    engine = draw_sidebar()
    del st.session_state["_sidebar_drawn"]
    return engine


# -- the query -------------------------------------------------------------------------------

def _take_upload(key: str, name: str) -> None:
    """Decodes the file just given to widget ``key`` and makes it the query."""
    upload = st.session_state.get(key)
    if upload is None:
        return
    if getattr(upload, "size", 0) > MAX_UPLOAD_BYTES:
        st.session_state["query_error"] = (f"That file is {upload.size / 2**20:.0f} MB; photos up to "
                                           f"{MAX_UPLOAD_BYTES // 2**20} MB are accepted.")
        return
    try:
        rgb = imgsim.decode_query(upload)
    except imgsim.ImageDecodeError as err:
        st.session_state["query_error"] = f"That file cannot be used: {err}"
        return
    st.session_state.pop("query_error", None)
    st.session_state["query"] = Query("image", getattr(upload, "name", None) or name, rgb=rgb)


def set_item_query(engine: imgsim.Engine, row: int) -> None:
    """Makes catalogue item ``row`` the query."""
    st.session_state.pop("query_error", None)
    st.session_state["query"] = Query("item", str(engine.items["name"].iloc[row]) or "Catalogue item",
                                      row=int(row), catalog=engine.catalog.name,
                                      item_id=str(engine.items["id"].iloc[row]))


def query_widgets(engine: imgsim.Engine, page: str) -> None:
    """Upload, camera and example inputs; the latest one used becomes the query."""
    st.file_uploader("Upload a photo", type=UPLOAD_TYPES, key=f"upload-{page}",
                     on_change=_take_upload, args=(f"upload-{page}", "Your photo"),
                     help="JPEG, PNG, WebP, HEIC (iPhone), AVIF, GIF, BMP or TIFF")
    cols = st.columns(2)
    cols[0].button("Try an example", icon=":material/casino:", width="stretch", key=f"example-{page}",
                   on_click=lambda: set_item_query(engine, random.randrange(len(engine.items))))
    if cols[1].toggle("Use the camera", key=f"use-camera-{page}"):
        st.camera_input("Take a photo", key=f"cam-{page}", on_change=_take_upload,
                        args=(f"cam-{page}", "Camera photo"))


def current_query(engine: imgsim.Engine) -> Query | None:
    """The remembered query if it applies to ``engine``'s catalogue, else None (errors shown)."""
    if st.session_state.get("query_error"):
        st.error(st.session_state["query_error"])
    query = st.session_state.get("query")
    if query is None:
        return None
    if query.kind == "item":
        rows = engine.items["id"].to_numpy()
        if (query.catalog != engine.catalog.name or query.row is None or not 0 <= query.row < len(rows)
                or rows[query.row] != query.item_id):
            del st.session_state["query"]  # it belonged to another catalogue or an older version
            return None
    return query


def run_query(engine: imgsim.Engine, query: Query, approach: str, k: int,
              category: str | None) -> imgsim.SearchResult | None:
    """Runs one search, turning user-fixable problems into messages."""
    try:
        if query.kind == "item":
            return engine.search_item(query.row, approach, k, category=category)
        regions = None if st.session_state.get("regions", True) else False
        return engine.search(query.rgb, approach, k, category=category, box=query.box, regions=regions)
    except (ValueError, imgsim.ArtifactError) as err:
        st.error(str(err))
        return None


def show_query(query: Query, result: imgsim.SearchResult | None) -> None:
    """The query as the model sees it (orientation fixed, cropped, padded and resized).

    For a photo searched by regions, the photo itself with the automatic product box drawn on it.
    """
    if result is None:
        return
    if query.kind == "image" and result.auto_box is not None and query.box is None:
        st.image(with_box(query.rgb, result.auto_box), width=220,
                 caption=f"{query.name} — the product box found automatically ({result.regions} regions searched)")
    else:
        st.image(result.query_image, caption=f"{query.name} — as the model sees it", width=160)


def with_box(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A copy of ``rgb`` with ``box`` drawn on it (for showing where the product was found)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    width = max(2, round(max(im.size) / 150))
    ImageDraw.Draw(im).rectangle(box, outline=(47, 111, 222), width=width)
    return np.asarray(im)


#: Longest side of the crop editor's picture: fits a phone screen (390 px) with its margins.
CROP_EDITOR_SIDE = 340


def crop_box_editor(query: Query, result: imgsim.SearchResult | None, page: str) -> None:
    """Lets the user draw or adjust a box around the product and search with that region only.

    The automatic box is where the box starts. The box is kept in the query (session state), so
    it survives page changes; "Search the whole photo" drops it.
    """
    if query.kind != "image":
        return
    if not st.toggle("Adjust the product box", key=f"crop-{page}",
                     help="Draw a box around the product to search with that part of the photo only"):
        if query.box is not None and st.button("Search the whole photo", key=f"uncrop-{page}"):
            st.session_state["query"] = dataclasses.replace(query, box=None)
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
        st.session_state["query"] = dataclasses.replace(query, box=box)
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


def result_grid(engine: imgsim.Engine, result: imgsim.SearchResult, key: str, columns: int = 4) -> None:
    """Thumbnails with name, category, price and score; each can become the next query."""
    if result.items.empty:
        st.info("No item matches (is the category filter too narrow?).")
        return
    unit = "similarity" if result.metric == "cosine" else "distance"
    rows = result.items.to_dict("records")
    for start in range(0, len(rows), columns):
        cols = st.columns(columns)
        for col, item in zip(cols, rows[start:start + columns]):
            with col:
                st.image(item["thumb_path"], width="stretch")
                name = plain(str(item.get("name") or "").strip()[:60] or str(item["id"]))
                details = [plain(str(c)) for c in (item.get("category"), item.get("price") and f"₹{item['price']}") if c]
                st.markdown(f"**{item['rank']}. {name}**  \n"
                            f"{' · '.join(details)}  \n{unit} {item['score']:.3f}")
                st.button("More like this", key=f"{key}-more-{item['row']}", on_click=set_item_query,
                          args=(engine, item["row"]), width="stretch")
