"""Compare: one query through every approach, side by side."""

import streamlit as st

from pages import shared

st.title("Compare approaches")
engine = shared.current_engine()
if engine is not None:
    _, k, category = shared.search_options()
    approaches = engine.approaches()
    if len(approaches) < 2:
        st.info("Comparing needs at least two approaches; this catalogue has "
                f"{', '.join(approaches) or 'none'}. Rebuild it on the Catalogue page.")
    shared.query_widgets(engine, "compare")
    query = shared.current_query(engine)
    if query is not None and approaches:
        results = {a: shared.run_query(engine, query, a, k, category) for a in approaches}
        results = {a: r for a, r in results.items() if r is not None}
        first = next(iter(results.values()), None)
        if first is not None:
            shared.show_query(query, first)
        shared.crop_box_editor(query, first, "compare")
        id_sets = [set(r.ids) for r in results.values()]
        shared_ids = set.intersection(*id_sets) if id_sets else set()
        st.markdown(f"**{len(shared_ids)} of {k}** results are shared by all approaches.")
        label = engine.items["label"].iloc[query.row] or None if query.kind == "item" else None
        columns = st.columns(len(results))
        for column, (approach, result) in zip(columns, results.items()):
            with column:
                st.subheader(result.label)
                line = f"{result.seconds * 1000:.0f} ms"
                if label:
                    line += (f" · precision@{k} for label “{shared.plain(label)}”: "
                             f"**{result.label_precision(label):.2f}**")
                st.markdown(line)
                shared.result_grid(engine, result, key=f"compare-{approach}", columns=2)
