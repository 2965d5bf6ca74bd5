"""Evaluation: leave-one-out precision@k curves and 2-D maps of each approach's embeddings."""

import altair as alt
import pandas as pd
import streamlit as st

import imgsim
from app_support import engine as cache
from app_support.sidebar import current_engine
from app_support.text import bold, plain

#: Categories named in a map's legend; the rest are drawn in grey as "other".
TOP_CATEGORIES = 9
OTHER = "other"


def _legend(columns: int = 1) -> alt.Legend:
    """A legend under the chart, every label whole (Vega cuts labels at 160 px by default)."""
    return alt.Legend(orient="bottom", direction="vertical", columns=columns, labelLimit=0, title=None)


def curve_chart(curves: pd.DataFrame) -> alt.Chart:
    """precision@k per approach (one column each, index k) with distinct colours and full names."""
    long = curves.rename_axis("k").reset_index().melt("k", var_name="approach", value_name="precision@k")
    return alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("k:Q", title="k"), y=alt.Y("precision@k:Q", title="precision@k"),
        color=alt.Color("approach:N", scale=alt.Scale(scheme="tableau10"), legend=_legend(),
                        sort=list(curves.columns)),
        tooltip=["approach", "k", alt.Tooltip("precision@k:Q", format=".3f")])


def top_categories(categories: pd.Series, top: int = TOP_CATEGORIES) -> pd.Series:
    """``categories`` with all but the ``top`` most common replaced by :data:`OTHER`."""
    values = categories.fillna("").astype(str).replace("", OTHER)
    keep = values[values != OTHER].value_counts().index[:top]
    return values.where(values.isin(keep), OTHER)


def map_chart(points: pd.DataFrame) -> alt.Chart:
    """A 2-D map coloured by the top categories ("other" in grey), every one in the legend."""
    shown = points.assign(category=top_categories(points["category"]))
    names = [c for c in shown["category"].value_counts().index if c != OTHER]
    domain = names + ([OTHER] if (shown["category"] == OTHER).any() else [])
    palette = alt.Scale(domain=domain, range=[*TABLEAU10[:len(names)], "#b0b0b0"][:len(domain)])
    return alt.Chart(shown).mark_circle(size=30, opacity=0.7).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        color=alt.Color("category:N", scale=palette, legend=_legend(2)), tooltip=["category"])


TABLEAU10 = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]

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
