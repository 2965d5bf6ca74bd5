"""Near-duplicate groups on myntra_eval: altered copies found, distinct products kept apart.

From a labelled folder (default ``../shared/data/myntra_eval``) it takes ``--items`` photos
(seeded), and for every ``--every``-th of them writes one altered copy (the kinds of
:mod:`imgsim.analysis.copies` in turn: JPEG quality 35-60, resized to 40-70%, cropped to 85-92%,
relit, recoloured, rotated 2-6 degrees, a text banner) into the same folder, builds a catalogue
of the lot with the pretrained approach, and runs :func:`imgsim.find_duplicates` on it (the
threshold is calibrated on the catalogue itself, as ``imgsim duplicates`` does). It reports:

- recall: the share of copies grouped with their original (target >= 0.90), by kind;
- precision of predicted pairs (accepted pairs; target >= 0.95). A pair is true when both are
  one original or its copy, or come from two originals with the same pixels (myntra holds a
  few photos twice, under two ids);
- distinct products of one label (same articleType, baseColour and brand) kept apart: the share
  of such pairs of originals, different in pixels, that no group joins;
- the time of the build, the calibration and the grouping, and the grouping extrapolated to
  10,000 items (linear: candidates are a fixed number of neighbours per item, the neighbour
  search is blockwise and small next to the finer checks at this size).

Everything is written under ``--work`` (default ``/tmp/imgsim-duplicates``); ``--reuse`` scores
the catalogue built there again with its saved threshold (no build, no calibration)::

    .venv/bin/python benchmarks/duplicates.py --json /tmp/duplicates.json
    .venv/bin/python benchmarks/duplicates.py --reuse

Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgsim.analysis.copies import Alteration, alter  # noqa: E402
from imgsim.analysis.duplicates import find_duplicates  # noqa: E402
from imgsim.build import BuildOptions, build  # noqa: E402
from imgsim.engine import Engine  # noqa: E402
from imgsim.ingest.images import decode_image  # noqa: E402

# Beside the checkout (../shared), or the workplace's shared folder for a worktree deeper down.
DEFAULT_DATA = next((p / "shared" / "data" / "myntra_eval" for p in Path(__file__).resolve().parents[1:4]
                     if (p / "shared" / "data" / "myntra_eval" / "labels.csv").is_file()),
                    Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra_eval")


def prepare(data: Path, folder: Path, items: int, every: int, seed: int) -> pd.DataFrame:
    """Writes the sample and its copies into ``folder``; returns one row per file written."""
    labels = pd.read_csv(data / "labels.csv")
    sample = labels.sample(min(items, len(labels)), random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    kinds = itertools.cycle(Alteration)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, row in sample.iterrows():
        src = data / row["path"]
        name = f"m{row['id']}{src.suffix.lower()}"
        shutil.copyfile(src, folder / name)
        brand = str(row["productDisplayName"]).split(" ")[0]
        key = f"{row['articleType']}|{row['baseColour']}|{brand}"
        rows.append({"file": name, "original": name, "kind": "", "key": key})
        if i % every == 0:
            kind = next(kinds)
            copy = alter(decode_image(src), kind, rng)
            copy_name = f"c{row['id']}-{kind.value}.jpg"
            Image.fromarray(copy).save(folder / copy_name, format="JPEG", quality=92)
            rows.append({"file": copy_name, "original": name, "kind": kind.value, "key": key})
    return pd.DataFrame(rows)


def score(truth: pd.DataFrame, engine: Engine, report) -> dict:
    """Recall by kind, precision of accepted pairs, and same-label products kept apart."""
    by_stem = truth.set_index(truth["file"].str.rsplit(".", n=1).str[0])
    names = engine.items["name"].astype(str).tolist()
    stems = [Path(engine.items["source"].iloc[r]).stem if "source" in engine.items else names[r]
             for r in range(len(engine.items))]
    row_of = {s: r for r, s in enumerate(stems)}
    original_of = [by_stem.loc[s, "original"].rsplit(".", 1)[0] if s in by_stem.index else s for s in stems]
    group_of = {r: g for g, members in enumerate(report.groups) for r in members}

    def same_pixels(a: int, b: int) -> bool:
        pa, pb = decode_image(engine.items["thumb_path"].iloc[a]), decode_image(engine.items["thumb_path"].iloc[b])
        return pa.shape == pb.shape and float(np.abs(pa.astype(int) - pb.astype(int)).mean()) < 1.0

    copies = truth[truth["kind"] != ""]
    found = {}
    for _, c in copies.iterrows():
        a, b = row_of.get(c["file"].rsplit(".", 1)[0]), row_of.get(c["original"].rsplit(".", 1)[0])
        hit = a is not None and b is not None and a in group_of and group_of.get(b) == group_of[a]
        found.setdefault(c["kind"], []).append(hit)
    true_pairs = 0
    false_examples = []
    for p in report.pairs:
        a, b = p["a"], p["b"]
        oa, ob = row_of.get(original_of[a], a), row_of.get(original_of[b], b)
        if oa == ob or same_pixels(oa, ob):  # myntra itself holds a few photos twice, under two ids
            true_pairs += 1
        elif len(false_examples) < 10:
            false_examples.append([stems[a], stems[b], p["score"], p["cosine"]])
    originals = truth[truth["kind"] == ""]
    apart = joined = 0
    for _, members in originals.groupby("key"):
        rows = [row_of[f.rsplit(".", 1)[0]] for f in members["file"] if f.rsplit(".", 1)[0] in row_of]
        for a, b in itertools.combinations(rows, 2):
            together = a in group_of and group_of.get(b) == group_of[a]
            if together and same_pixels(a, b):
                continue
            joined += together
            apart += not together
    all_hits = [h for hits in found.values() for h in hits]
    return {
        "copies": len(all_hits),
        "recall": round(float(np.mean(all_hits)), 4) if all_hits else None,
        "recall_by_kind": {k: round(float(np.mean(v)), 3) for k, v in sorted(found.items())},
        "predicted_pairs": len(report.pairs),
        "precision": round(true_pairs / len(report.pairs), 4) if report.pairs else None,
        "false_pair_examples": false_examples,
        "same_label_pairs": apart + joined,
        "same_label_kept_apart": round(apart / (apart + joined), 4) if apart + joined else None,
        "groups": len(report.groups),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--every", type=int, default=3, help="one copy for every N-th item (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgsim-duplicates"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--reuse", action="store_true", help="score the catalogue already built in --work")
    args = parser.parse_args()
    if not (args.data / "labels.csv").is_file():
        print(f"skipped: no labelled folder at {args.data}")
        return 0
    folder, out = args.work / "photos", args.work / "catalog"
    build_seconds = None
    if args.reuse:
        truth = pd.read_csv(args.work / "truth.csv", keep_default_na=False)
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        truth = prepare(args.data, folder, args.items, args.every, args.seed)
        truth.to_csv(args.work / "truth.csv", index=False)
        t0 = time.perf_counter()
        build(str(folder), out, BuildOptions(approaches=("pretrained",)))
        build_seconds = round(time.perf_counter() - t0, 1)
    engine = Engine.open(out)
    report = find_duplicates(engine, recalibrate=not args.reuse)
    n = len(engine.items)
    grouping = report.seconds - report.calibration_seconds
    results = {
        "items": n, "build_seconds": build_seconds,
        "calibration_seconds": round(report.calibration_seconds, 1), "grouping_seconds": round(grouping, 1),
        "grouping_seconds_at_10000_items": round(grouping * 10_000 / n, 1),
        "threshold": report.as_json()["threshold"], "calibration": report.as_json()["calibration"],
        **score(truth, engine, report), "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
