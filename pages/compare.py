"""Compare: one query through every approach, side by side."""

import numpy as np
import streamlit as st

from pages import shared

st.title("Compare approaches")
engine = shared.current_engine()
if engine is not None:
    _, k, category = shared.sidebar_search_options(engine, approaches=False)
    approaches = engine.approaches()
    if len(approaches) < 2:
        st.info("Comparing needs at least two approaches; this catalogue has "
                f"{', '.join(approaches) or 'none'}. Rebuild it on the Catalogue page.")
    shared.query_widgets(engine)
    query = shared.current_query(engine)
    if query is not None and approaches:
        results = {a: shared.run_query(engine, query, a, k, category) for a in approaches}
        results = {a: r for a, r in results.items() if r is not None}
        first = next(iter(results.values()), None)
        if first is not None:
            shared.show_query(engine, query, first)
        id_sets = [set(r.ids) for r in results.values()]
        shared_ids = set.intersection(*id_sets) if id_sets else set()
        st.markdown(f"**{len(shared_ids)} of {k}** results are shared by all approaches.")
        label = None
        if query[0] == "item":
            label = engine.items["label"].iloc[query[1]] or None
        columns = st.columns(len(results))
        for column, (approach, result) in zip(columns, results.items()):
            with column:
                st.subheader(shared.APPROACH_LABELS[approach])
                line = f"{result.seconds * 1000:.0f} ms"
                if label:
                    precision = float(np.mean(result.items["label"] == label)) if len(result.items) else 0.0
                    line += f" · precision@{k} for label “{label}”: **{precision:.2f}**"
                st.markdown(line)
                shared.result_grid(engine, result, key=f"compare-{approach}", columns=2)
