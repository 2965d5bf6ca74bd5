"""imgsim's Streamlit app: page config, the shared sidebar, navigation, and the Search page.

The sidebar's widgets (catalogue, approach, k, category) are drawn here, once per run, before
the chosen page runs, so their values persist from page to page.
"""

import streamlit as st

from pages import shared


def search_page() -> None:
    """Search: a photo in, the most similar catalogue items out."""
    st.title("Visual search")
    engine = shared.current_engine()
    if engine is None:
        return
    approach, k, category = shared.search_options()
    st.caption(f"{len(engine.items)} items in **{engine.catalog.name}**. Upload or snap a photo, "
               "or try an example from the catalogue.")
    shared.query_widgets(engine, "search")
    query = shared.current_query(engine)
    if query is None or approach is None:
        return
    result = shared.run_query(engine, query, approach, k, category)
    left, right = st.columns([1, 3])
    with left:
        shared.show_query(query, result)
    if result is None:
        return
    with right:
        st.subheader(f"{len(result.items)} most similar")
        st.caption(f"{result.label} · {result.seconds * 1000:.0f} ms "
                   f"(search {result.search_seconds * 1000:.1f} ms)"
                   + (" · searched with your box" if query.box else ""))
    shared.crop_box_editor(query, result, "search")
    shared.result_grid(engine, result, key="search")


st.set_page_config(page_title="imgsim · visual search", page_icon=":material/image_search:", layout="wide")
st.logo(str(shared.ASSETS / "logo.svg"))
navigation = st.navigation([
    st.Page(search_page, title="Search", icon=":material/image_search:", default=True),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/reconstructions.py", title="Reconstructions", icon=":material/auto_fix_high:"),
    st.Page("pages/catalogue.py", title="Catalogue", icon=":material/inventory_2:"),
    st.Page("pages/evaluation.py", title="Evaluation", icon=":material/monitoring:"),
])
shared.draw_sidebar()
navigation.run()
