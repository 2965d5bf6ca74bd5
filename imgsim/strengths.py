"""What each approach was measured to be good at on this catalogue, in words a shopper understands.

Two measurements the build makes on the catalogue itself:

- phone photos: the no-good-match calibration (:mod:`imgsim.calibration`) searches simulated
  phone photos of the catalogue's own items through every approach, as a shopper's photo is
  searched; its line records how often the photographed product came first and was in the top 10;
- catalogue photos: leave-one-out evaluation by the catalogue's labels, else its categories
  (:meth:`imgsim.engine.Engine.evaluate`; ``tuned`` is scored with each query's label held out):
  how many of an item's first 10 results share its label. :func:`record` runs it at build time
  and saves it as an artifact (``models/evaluation/``) naming the stores it scored.

:func:`describe` turns both into one plain sentence per approach (no Markdown of its own; a page
shows it as plain text, since it names a catalogue column).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactError, load_artifact, write_artifact

KIND = "evaluation_report"
FORMAT_VERSION = 1
REPORT_FILE = "report.json"
K = 10
#: Where the report lives: beside the learned models (``CATALOG/models/evaluation``).
NAME = "evaluation"


def _column(catalog) -> str | None:
    """The column to score by: the catalogue's label column, else ``category``; None when neither
    has 2 values of 2 or more items."""
    from imgsim.approaches.tuned_head import usable_labels

    for column in dict.fromkeys([catalog.label_column(), "category"]):
        if column in catalog.ok.columns:
            labels = catalog.ok[column].fillna("").astype(str).to_numpy()
            if len(set(labels[usable_labels(labels)])) >= 2:
                return column
    return None


def _stores(engine, approaches: Iterable[str]) -> dict[str, Any]:
    """What the report is valid for: each scored store's model fingerprint (items added or removed
    since, embedded by the same models, keep it)."""
    return {a: engine.store(a).manifest.get("fingerprint") for a in approaches}


def record(engine, *, log: Callable[[str], None] = lambda message: None) -> dict | None:
    """Scores every approach the catalogue has by its labels and saves the report, unless current.

    Every store is scored, not only those a build just made, so a build of some approaches
    keeps the others in the report.

    Args:
        engine: An :class:`imgsim.engine.Engine` over the catalogue (the caller opens and closes
            it: this module is below the engine and never imports it).
        log: Receives one line when a report is written.

    Returns:
        The report (see :meth:`imgsim.engine.Engine.evaluate`), or None where the catalogue has
        nothing to score by.
    """
    catalog = engine.catalog
    column = _column(catalog)
    if column is None:
        return None
    built = engine.approaches()
    if not built:
        return None
    expect = {"label_column": column, "stores": _stores(engine, built)}
    root = layout.model_dir(catalog.root, NAME)
    try:
        load_artifact(root, KIND, FORMAT_VERSION, expect=expect)
        return json.loads((root / REPORT_FILE).read_text("utf-8"))
    except ArtifactError:
        pass
    report = engine.evaluate(column, K, approaches=built)

    def write(tmp: Path) -> None:
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", "utf-8")

    write_artifact(root, {"kind": KIND, "format_version": FORMAT_VERSION, **expect}, write)
    log("evaluation: " + ", ".join(f"{a} P@{K} {report[a][f'precision@{K}']:.3f}" for a in built)
        + f" by {column!r}")
    return report


def saved_report(engine) -> dict | None:
    """The build's evaluation report, where it scored the stores the engine has now; else None."""
    root = layout.model_dir(engine.catalog.root, NAME)
    try:
        manifest = load_artifact(root, KIND, FORMAT_VERSION)
        built = [a for a in manifest.get("stores", {}) if a in engine.approaches()]
        if not built or _stores(engine, built) != {a: manifest["stores"][a] for a in built}:
            return None
        return json.loads((root / REPORT_FILE).read_text("utf-8"))
    except (ArtifactError, OSError, ValueError, KeyError):
        return None


def phone_recall(engine, approach: str) -> dict[str, float] | None:
    """``{"first", "top10", "photos"}``: how the calibration's phone photos found their product, or None."""
    from imgsim.calibration import load_threshold

    try:
        line = load_threshold(layout.match_dir(engine.catalog.root, approach), approach,
                              engine.store(approach).manifest)
    except ArtifactError:
        return None
    p = line.positives
    if "found_first" not in p:
        return None
    return {"first": float(p["found_first"]), "top10": float(p[f"found_in_top{K}"]), "photos": int(p["count"])}


def _in_ten(share: float) -> str:
    n = int(round(share * 10))
    return "never" if n == 0 else f"{n} time{'s' if n != 1 else ''} in 10"


def describe(engine) -> dict[str, str]:
    """One plain sentence per available approach: what it was measured to be good at here.

    Returns:
        ``{approach: sentence}``; "Not measured on this catalogue yet" where neither measurement
        exists (a catalogue under 20 items, or built before these were recorded).
    """
    approaches = engine.approaches()
    report = saved_report(engine) or {}
    phone = {a: phone_recall(engine, a) for a in approaches}
    column = report.get("label_column")
    p10 = {a: report[a][f"precision@{K}"] for a in approaches if isinstance(report.get(a), dict)}
    best_phone = max((v["first"] for v in phone.values() if v), default=None)
    best_kind = max(p10.values(), default=None)
    out = {}
    for a in approaches:
        parts = []
        if phone[a]:
            parts.append(f"Finds the product in a phone photo first {_in_ten(phone[a]['first'])}, and among the "
                         f"first {K} results {_in_ten(phone[a]['top10'])} ({phone[a]['photos']} simulated phone "
                         "photos of this catalogue).")
        if a in p10:
            parts.append(f"For a catalogue photo, {p10[a] * K:.0f} of the first {K} results have the same "
                         f"{column} (by chance: {report['chance'] * K:.0f}).")
        best = []
        if len(approaches) > 1 and phone[a] and phone[a]["first"] == best_phone:
            best.append("phone photos")
        if len(p10) > 1 and p10.get(a) == best_kind:
            best.append(f"more of the same {column}")
        if best:
            parts.append("The best here for " + " and for ".join(best) + ".")
        out[a] = " ".join(parts) or "Not measured on this catalogue yet."
    return out
