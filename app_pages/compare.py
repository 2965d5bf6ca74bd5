"""Compare: one query through every approach, side by side."""

import pandas as pd
import streamlit as st

from app_support import query as q
from app_support import state, widgets
from app_support.engine import strengths
from app_support.sidebar import current_engine
from app_support.text import plain

st.title("Compare approaches")
engine = current_engine()
if engine is not None:
    _, k, category = state.search_options()
    approaches = engine.approaches()
    if len(approaches) < 2:
        st.info("Comparing needs at least two approaches; this catalogue has "
                f"{plain(', '.join(approaches) or 'none')}. Rebuild it on the Catalogue page.")
    q.query_widgets(engine, "compare")
    query = q.current_query(engine)
    if query is None and state.search_words():
        st.info("Your words re-rank each approach's results once there is a photo; the Search page "
                "searches the words alone.")
    if query is not None and approaches:
        results = {a: q.run_query(engine, query, a, k, category) for a in approaches}
        results = {a: r for a, r in results.items() if r is not None}
        first = next(iter(results.values()), None)
        with st.container(key="query-row"):
            left, right = st.columns([1, 2], vertical_alignment="center")
            with left:
                q.show_query(query, first)
        widgets.crop_box_editor(query, first, "compare")
        id_sets = [set(r.ids) for r in results.values()]
        shared_ids = set.intersection(*id_sets) if id_sets else set()
        right.markdown(f"**{len(shared_ids)} of {k}** results are shared by all approaches (marked ● shared).")
        if q.box_note(query):
            right.caption(q.box_note(query).removeprefix(" · ").capitalize())
        label = engine.items["label"].iloc[query.row] or None if query.kind == "item" else None
        summary = {result.label: {"time (ms)": round(result.seconds * 1000)} for result in results.values()}
        if label:
            for result in results.values():
                summary[result.label][f"precision@{k}"] = round(result.label_precision(label), 2)
            st.caption(plain(f"precision@{k}: the share of results with the query's label “{label}”"))
        st.table(pd.DataFrame(summary).T.style.format("{:.0f}", subset=["time (ms)"])
                 .format("{:.2f}", subset=[c for c in (f"precision@{k}",) if label]))
        # One tab per approach: side-by-side columns stack into one 12,000 px column on a phone.
        tabs = st.tabs([result.label for result in results.values()])
        said = strengths(str(engine.catalog.root), engine.version)
        for tab, (approach, result) in zip(tabs, results.items()):
            with tab:
                st.caption(plain(said.get(approach, "")))
                line = f"{result.seconds * 1000:.0f} ms"
                if label:
                    line += (f" · precision@{k} for label “{plain(label)}”: "
                             f"**{result.label_precision(label):.2f}**")
                st.markdown(line)
                if result.no_good_match:
                    st.info("Nothing like this in the catalogue: the closest items are shown below.")
                widgets.result_grid(engine, result, key=f"compare-{approach}", query=query, shared=shared_ids)
