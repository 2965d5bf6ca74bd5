"""What every page shares: the cached engine, the catalogue picker, the query and result widgets.

Streamlit caching lives here and only here: one engine per catalogue per process
(``st.cache_resource``), so models and stores load once, not per rerun or per page.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from imgsim import sources
from imgsim.artifacts import ArtifactError
from imgsim.build import BuildOptions, build, default_demo_path
from imgsim.catalog import list_catalogs
from imgsim.engine import APPROACH_LABELS, Engine, SearchResult
from imgsim.images import ImageDecodeError, decode_image

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "heic", "heif", "gif", "bmp", "tiff", "tif"]
ASSETS = Path(__file__).resolve().parents[1] / "assets"


def stamp(path: Path) -> float:
    """Changes whenever the catalogue or one of its stores or models is rewritten."""
    files = [path / "manifest.json", *path.glob("stores/*/manifest.json"), *path.glob("models/*/manifest.json")]
    return sum(f.stat().st_mtime for f in files if f.exists())


@st.cache_resource(show_spinner="Loading the catalogue and its models (first time only)…", max_entries=4)
def _engine(path: str, version: float) -> Engine:
    engine = Engine.open(path)
    engine.warm_up()
    return engine


def engine_for(path: Path) -> Engine:
    """The process-wide engine of the catalogue at ``path``."""
    return _engine(str(path), stamp(path))


def build_with_progress(source: str, out: Path, options: BuildOptions | None = None) -> bool:
    """Runs a build with a progress bar per stage; shows errors in plain words."""
    bar = st.progress(0.0, text="Starting…")
    labels = {"ingest": "Importing images", "pretrained": "Indexing with the pretrained CNN",
              "decode": "Preparing training images", "train": "Training the autoencoder",
              "autoencoder": "Indexing with the autoencoder"}

    def stage(name: str):
        def report(done: int, total: int, message: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=f"{labels.get(name, name)}: {done}/{total} {message}")
        return report

    try:
        build(source, out, options or BuildOptions(), progress=stage)
    except (ArtifactError, sources.SourceError, ValueError, OSError) as err:
        bar.empty()
        st.error(f"The build stopped: {err}")
        return False
    bar.progress(1.0, text="Done")
    return True


def current_engine() -> Engine | None:
    """The engine of the selected catalogue, building the demo on the very first run."""
    catalogs = list_catalogs()
    if not catalogs:
        demo = default_demo_path()
        if not sources.demo_available():
            st.info(
                "No catalogue yet, and the demo catalogue needs Debian's `tuxpaint-stamps-default` "
                "package (`sudo apt-get install -y tuxpaint-stamps-default`). Or open the **Catalogue** "
                "page and import a folder of images or a Flipkart CSV."
            )
            return None
        st.info("First run: building the demo catalogue (about 700 pictures; a few minutes, once).")
        if not build_with_progress("demo", demo):
            return None
        catalogs = list_catalogs()
    names = [p.name for p in catalogs]
    chosen = st.session_state.get("catalog")
    if chosen not in names:
        chosen = "demo" if "demo" in names else names[0]
    chosen = st.sidebar.selectbox("Catalogue", names, index=names.index(chosen))
    if chosen != st.session_state.get("catalog"):
        st.session_state["catalog"] = chosen
        st.session_state.pop("query", None)
    try:
        return engine_for(catalogs[names.index(chosen)])
    except (ArtifactError, OSError, ValueError) as err:
        st.error(f"Catalogue {chosen} cannot be opened: {err}")
        return None


@st.cache_data(show_spinner="Scoring every item against all the others…", max_entries=16)
def evaluation(path: str, version: float, label_column: str) -> dict:
    """Leave-one-out report at k = 10 with precision curves to k = 20 (cached per catalogue state)."""
    return engine_for(Path(path)).evaluate(label_column, 10, curve_k=20)


@st.cache_data(show_spinner=False, max_entries=16)
def pca_map(path: str, version: float, approach: str, limit: int = 3000) -> pd.DataFrame:
    """A 2-D PCA of up to ``limit`` items' embeddings, with their categories (for a scatter plot)."""
    engine = engine_for(Path(path))
    x = np.asarray(engine.store(approach).embeddings, dtype=np.float64)
    rows = np.random.default_rng(0).permutation(len(x))[:limit]
    x = x[rows] - x[rows].mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1],
                         "category": engine.items["category"].iloc[rows].replace("", "(none)").to_numpy()})


# -- the query -------------------------------------------------------------------------------------

def _set_query(kind: str) -> None:
    st.session_state["query_kind"] = kind


def query_widgets(engine: Engine) -> None:
    """Upload, camera and example inputs; the latest one used becomes the query."""
    st.file_uploader("Upload a photo", type=UPLOAD_TYPES, key="upload",
                     on_change=_set_query, args=("upload",),
                     help="JPEG, PNG, WebP, HEIC (iPhone), GIF, BMP or TIFF")
    cols = st.columns(2)
    if cols[0].button("Try an example", icon=":material/casino:", width="stretch"):
        st.session_state["query_kind"] = "item"
        st.session_state["query_row"] = random.randrange(len(engine.items))
    if cols[1].toggle("Use the camera", key="use_camera"):
        st.camera_input("Take a photo", key="cam", on_change=_set_query, args=("camera",))


def more_like(row: int) -> None:
    """Makes catalogue item ``row`` the query."""
    st.session_state["query_kind"] = "item"
    st.session_state["query_row"] = int(row)


def current_query(engine: Engine) -> tuple[str, np.ndarray | int] | None:
    """``("image", rgb)`` or ``("item", row)`` for the active query, or None.

    A file that cannot be decoded shows an error and counts as no query.
    """
    kind = st.session_state.get("query_kind")
    if kind == "item":
        row = st.session_state.get("query_row", 0)
        return ("item", row) if 0 <= row < len(engine.items) else None
    upload = st.session_state.get("cam") if kind == "camera" else st.session_state.get("upload")
    if upload is None:
        upload = st.session_state.get("upload") or st.session_state.get("cam")
    if upload is None:
        return None
    try:
        return "image", decode_image(upload, max_side=448)
    except ImageDecodeError as err:
        st.error(f"That file cannot be used: {err}")
        return None


def run_query(engine: Engine, query, approach: str, k: int, category: str | None) -> SearchResult | None:
    """Runs one search, turning user-fixable problems into messages."""
    kind, value = query
    try:
        if kind == "item":
            return engine.search_item(value, approach, k, category=category)
        return engine.search(value, approach, k, category=category)
    except (ValueError, ArtifactError) as err:
        st.error(str(err))
        return None


def show_query(engine: Engine, query, result: SearchResult | None) -> None:
    """The query as the model sees it (orientation fixed, padded and resized)."""
    kind, value = query
    caption = engine.items["name"].iloc[value] if kind == "item" else "Your photo"
    if result is not None:
        st.image(result.query_image, caption=f"{caption} — as the model sees it", width=160)


def result_grid(engine: Engine, result: SearchResult, key: str, columns: int = 4) -> None:
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
                details = [c for c in (item.get("category"), item.get("price") and f"₹{item['price']}") if c]
                st.markdown(f"**{item['rank']}. {item['name'][:60]}**  \n"
                            f"{' · '.join(details)}  \n{unit} {item['score']:.3f}")
                st.button("More like this", key=f"{key}-more-{item['row']}", on_click=more_like,
                          args=(item["row"],), width="stretch")


def sidebar_search_options(engine: Engine, approaches: bool = True) -> tuple[str | None, int, str | None]:
    """Approach, k and category pickers in the sidebar."""
    available = engine.approaches()
    approach = None
    if approaches:
        if not available:
            st.sidebar.warning("This catalogue has no index yet: rebuild it on the Catalogue page.")
        else:
            approach = st.sidebar.radio("Approach", available, format_func=APPROACH_LABELS.get, key="approach")
    k = st.sidebar.slider("Results (k)", 1, 20, 8, key="k")
    categories = engine.categories()
    category = st.sidebar.selectbox("Category", ["All categories", *categories], key="category")
    return approach, k, None if category == "All categories" else category
