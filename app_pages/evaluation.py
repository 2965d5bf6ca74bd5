"""Evaluation: leave-one-out precision@k curves and 2-D maps of each approach's embeddings."""

import pandas as pd
import streamlit as st

import imgsim
from app_support import engine as cache
from app_support.charts import curve_chart, map_chart
from app_support.sidebar import current_engine
from app_support.text import bold, plain

st.title("Evaluation")
engine = current_engine()
if engine is not None:
    root = str(engine.catalog.root)
    candidates = [c for c in ("label", "category", "subcategory", "articleType", "subCategory")
                  if c in engine.items.columns and engine.items[c].astype(bool).any()]
    label_column = st.selectbox("An item is relevant when it shares the query's", candidates or ["label"])
    st.caption("Leave-one-out: every labelled item queries all the others.")
    try:
        report = cache.evaluation(root, engine.version, label_column)
    except (ValueError, imgsim.ImgsimError) as err:
        st.error(plain(err))
        report = None
    if report:
        approaches = [a for a in imgsim.approach_names() if a in report]
        labels = {a: engine.label(a) for a in approaches}
        table = pd.DataFrame({labels[a]: {key: report[a][key] for key in ("precision@1", "precision@10", "map@10")}
                              for a in approaches}).T
        st.table(table.style.format("{:.3f}"))  # wraps full names on a phone, where a data grid cuts them
        for a in approaches:
            if report[a].get("note"):
                st.caption(plain(f"{labels[a]}: {report[a]['note']}"))
        depth = min(len(report[a]["curve"]) for a in approaches)  # small catalogues rank fewer than 20
        curves = pd.DataFrame({labels[a]: report[a]["curve"][:depth] for a in approaches}, index=range(1, depth + 1))
        curves["chance"] = report["chance"]
        st.altair_chart(curve_chart(curves), width="stretch")
        st.caption(f"{report['n']} items labelled by {label_column!r}; chance precision {report['chance']:.3f}.")
    st.subheader("The catalogue in 2-D (PCA of each approach's embeddings)")
    columns = st.columns(max(len(engine.approaches()), 1))
    for column, approach in zip(columns, engine.approaches()):
        with column:
            st.markdown(bold(engine.label(approach)))
            st.altair_chart(map_chart(cache.embedding_map(root, engine.version, approach)), width="stretch")
