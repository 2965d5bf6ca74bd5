"""The shared sidebar: catalogue, approach, k, category, filters on other columns and region search.

The entry script draws it once per run, before the page, so its values persist across pages
(Streamlit's own multipage pattern); a page asks :func:`current_engine` for the result.
"""

from __future__ import annotations

import streamlit as st

import imgsim
from app_support import edit_rights, state
from app_support.engine import build_with_progress, engine_for, strengths
from app_support.text import plain
from app_support.uploads import public_message

MAX_K = 100


def sidebar_catalogue() -> imgsim.Engine | None:
    """The catalogue picker; builds the demo on the first run when its pictures are installed.

    Only catalogues with something to search are listed (a failed or emptied one is not).
    """
    edit_rights.read_link()
    catalogs = imgsim.searchable_catalogs()
    if not catalogs:
        if not imgsim.demo_available():
            st.info("No catalogue yet, and the demo catalogue's pictures are not installed on this "
                    "server. Open the **Catalogue** page and import a zip of images or a CSV of image URLs.")
            return None
        st.info("First run: building the demo catalogue (about 700 pictures; a few minutes, once).")
        if not build_with_progress("demo", imgsim.default_demo_path()):
            return None
        catalogs = imgsim.searchable_catalogs()
        if not catalogs:
            return None
    names = [p.name for p in catalogs]
    pending = st.session_state.pop(state.PENDING_CATALOG, None)  # just built on the Catalogue page
    if pending in names and pending != st.session_state.get(state.CATALOG):
        st.session_state[state.CATALOG] = pending
        state.forget_stale_state()
    if st.session_state.get(state.CATALOG) not in names:
        st.session_state[state.CATALOG] = "demo" if "demo" in names else names[0]
    chosen = st.sidebar.selectbox("Catalogue", names,
                                  **state.remembered(state.CATALOG, names[0], state.forget_stale_state))
    try:
        return engine_for(catalogs[names.index(chosen)])
    except (imgsim.ImgsimError, OSError, ValueError) as err:
        st.error(public_message(f"Catalogue {chosen} cannot be opened: {err}"))
        return None


def sidebar_search_options(engine: imgsim.Engine) -> None:
    """Approach, k, region search and category pickers."""
    available = engine.approaches()
    if not available:
        st.sidebar.warning("This catalogue has no index yet: rebuild it on the Catalogue page.")
    else:
        if st.session_state.get(state.APPROACH) not in available:
            st.session_state[state.APPROACH] = available[0]
        said = strengths(str(engine.catalog.root), engine.version)
        notes = "\n\n".join(f"**{plain(engine.label(a))}**: {plain(said.get(a, ''))}" for a in available)
        st.sidebar.radio("Approach", available, format_func=engine.label,
                         **state.remembered(state.APPROACH, available[0]),
                         help=f"Used on the Search page; Compare shows them all.\n\n{notes}")
    st.sidebar.slider("Results (k)", 1, MAX_K, **state.remembered(state.K, state.DEFAULT_K))
    st.sidebar.toggle("Find the product in the photo", **state.remembered(state.REGIONS, True),
                      help="Region search: the photo's regions and an automatic product box are searched "
                           "too, so a product photographed in a scene is found. Off: the whole photo only.")
    categories = [state.ALL_CATEGORIES, *engine.categories()]
    if st.session_state.get(state.CATEGORY) not in categories:
        st.session_state[state.CATEGORY] = categories[0]
    # Options of a selectbox are shown as text, never as Markdown.
    st.sidebar.selectbox("Category", categories, **state.remembered(state.CATEGORY, categories[0]))
    sidebar_filters(engine)


ANY = "Any"


def sidebar_filters(engine: imgsim.Engine) -> None:
    """Filters on the catalogue's own columns, in an expander: a choice for a column of a few
    values, a range for a numeric one. The conditions go to ``state.WHERE`` for the pages."""
    conditions = []
    choices = engine.filter_choices()
    if choices:
        with st.sidebar.expander("Filters", icon=":material/filter_list:"):
            for column, (kind, *values) in choices.items():
                key = state.WHERE_PREFIX + column
                label = plain(column)  # a widget label renders Markdown; a column name is the catalogue's
                if kind == "choices":
                    options = [ANY, *values]
                    if st.session_state.get(key) not in options:
                        st.session_state[key] = ANY
                    chosen = st.selectbox(label, options, **state.remembered(key, ANY))
                    if chosen != ANY:
                        conditions.append(imgsim.Condition(column, "=", chosen))
                    continue
                low, high = values
                kept = st.session_state.get(key)
                if not (isinstance(kept, tuple) and len(kept) == 2 and low <= kept[0] <= kept[1] <= high):
                    st.session_state[key] = (low, high)
                lo, hi = st.slider(label, low, high, **state.remembered(key, (low, high)))
                if lo > low:
                    conditions.append(imgsim.Condition(column, ">=", repr(lo)))
                if hi < high:
                    conditions.append(imgsim.Condition(column, "<=", repr(hi)))
    st.session_state[state.WHERE] = tuple(conditions)


def draw_sidebar() -> imgsim.Engine | None:
    """Draws the shared sidebar; returns the chosen engine (None when there is no catalogue)."""
    engine = sidebar_catalogue()
    if engine is not None:
        sidebar_search_options(engine)
    st.session_state[state.ENGINE_THIS_RUN] = engine
    st.session_state[state.SIDEBAR_DRAWN] = True
    return engine


def current_engine() -> imgsim.Engine | None:
    """The engine picked in the sidebar for this run (None when there is no catalogue).

    Draws the sidebar first when the entry script has not (a page run on its own, as
    Streamlit's test harness can do).
    """
    if st.session_state.pop(state.SIDEBAR_DRAWN, False):
        return st.session_state.get(state.ENGINE_THIS_RUN)
    engine = draw_sidebar()
    del st.session_state[state.SIDEBAR_DRAWN]
    return engine
