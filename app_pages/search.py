"""Search: a photo in, the most similar catalogue items out."""

import streamlit as st

from app_support import query as q
from app_support import state, widgets
from app_support.sidebar import current_engine
from app_support.text import bold

st.title("Visual search")
engine = current_engine()
if engine is not None:
    approach, k, category = state.search_options()
    st.caption(f"{len(engine.items)} items in {bold(engine.catalog.name)}. Upload or snap a photo, "
               "or try an example from the catalogue.")
    q.query_widgets(engine, "search")
    query = q.current_query(engine)
    if query is None and state.search_words():  # words alone
        result = q.run_query(engine, None, None, k, category)
        if result is not None:
            st.subheader(f"{len(result.items)} items matching your words")
            widgets.result_grid(engine, result, key="search-words")
    if query is not None and approach is not None:
        result = q.run_query(engine, query, approach, k, category)
        with st.container(key="query-row"):  # the photo small, beside what was found: results in the first screen
            left, right = st.columns([1, 2], vertical_alignment="center")
            with left:
                q.show_query(query, result)
            if result is not None:
                with right:
                    st.subheader(f"{len(result.items)} most similar")
                    st.caption(f"{result.label} · {result.seconds * 1000:.0f} ms "
                               f"(search {result.search_seconds * 1000:.1f} ms)"
                               + q.box_note(query)
                               + (" · re-ranked by your words" if state.search_words() else ""))
        widgets.crop_box_editor(query, result, "search")
        if result is not None:
            if result.no_good_match:
                st.info("Nothing like this in the catalogue: the closest items are shown below.")
            widgets.result_grid(engine, result, key="search", query=query)
