"""The Evaluation page's charts: every legend label whole, distinct colours, at most ten colours a map."""

from __future__ import annotations

import altair as alt
import pandas as pd

#: Tableau's ten colours less its grey, which a map keeps for "other".
TABLEAU9 = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]
#: Categories named in a map's legend; the rest are drawn in grey as "other".
TOP_CATEGORIES = len(TABLEAU9)
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
    palette = alt.Scale(domain=domain, range=[*TABLEAU9[:len(names)], "#b0b0b0"][:len(domain)])
    return alt.Chart(shown).mark_circle(size=30, opacity=0.7).encode(
        x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
        color=alt.Color("category:N", scale=palette, legend=_legend(2)), tooltip=["category"])
