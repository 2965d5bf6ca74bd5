"""A catalogue that changes: add 100 items and remove 100, against a full rebuild.

From a labelled folder (default ``../shared/data/myntra_eval``, articleType as the label) it
copies all photos but ``--held-out`` (seeded) into one folder and the held-out ones into another,
each with its rows of the labels CSV, then times:

1. a full build of the first folder with every approach that applies and its defaults
   (pretrained, autoencoder trained from scratch, tuned fitted on articleType);
2. ``add_items`` of the held-out folder, then ``refresh``;
3. ``remove_items`` of ``--held-out`` items of the original catalogue, then ``refresh``.

It reports wall and process-CPU seconds of each step, their ratio to the full build (the target
is under 5%), how many store rows were embedded and how many reused, and whether the learnt
models (autoencoder, tuned projection) kept their fingerprints, i.e. were not retrained.
Everything is written under ``--work`` (default ``/tmp/imgsim-changes``), never in the repo:
``full/`` is the catalogue as built (kept untouched), ``changed/`` a copy that steps 2 and 3
change, and ``full_build.json`` the full build's recorded time. ``--reuse WORK`` skips step 1 and
reads its time from there::

    nohup .venv/bin/python benchmarks/changes.py --json /tmp/changes.json > /tmp/changes.log 2>&1 &
    .venv/bin/python benchmarks/changes.py --reuse /tmp/imgsim-changes --json /tmp/changes.json

Exits 0 with a message when the data folder is absent. ``--limit N`` builds from N photos only
(a quick check of the script, not a result).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgsim import approaches as approaches_mod
from imgsim.build import BuildOptions, build, refresh
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.changes import add_items, remove_items
from imgsim.storage.artifacts import read_manifest

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra_eval"
LABEL = "articleType"
RECORD = "full_build.json"


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (other processes share these cores)."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(step: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Runs ``step``; returns its result and its wall and CPU seconds with the load around it."""
    load, wall, cpu = loadavg(), time.perf_counter(), cpu_seconds()
    result = step()
    return result, {"seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(cpu_seconds() - cpu, 2),
                    "loadavg_before": load, "loadavg_after": loadavg()}


def log(message: str) -> None:
    """One timestamped line on stdout (the full build runs for many minutes in the background)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def progress_factory(stage: str):
    """A progress callback that logs each tenth of a stage."""
    last = [-1]

    def report(done: int, total: int, message: str) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth != last[0]:
            last[0] = tenth
            log(f"  {stage}: {done}/{total} {message[:40]}")

    return report


def split(data: Path, work: Path, held_out: int, seed: int, limit: int | None) -> tuple[Path, Path]:
    """Copies the labelled photos into ``work/base`` and ``held_out`` seeded ones into ``work/added``.

    Each folder keeps the data folder's layout and has its own ``labels.csv`` (its rows only).
    """
    table = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    if limit is not None:
        table = table.iloc[np.sort(rng.choice(len(table), min(limit, len(table)), replace=False))]
    if held_out >= len(table):
        raise ValueError(f"`held_out` must be < the {len(table)} labelled photos. Received: held_out={held_out}")
    held = np.zeros(len(table), bool)
    held[rng.choice(len(table), held_out, replace=False)] = True
    folders = []
    for name, rows in (("base", table[~held]), ("added", table[held])):
        folder = work / name
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        for rel in rows["path"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data / rel, tmp / rel)
        rows.to_csv(tmp / "labels.csv", index=False)
        os.replace(tmp, folder)
        folders.append(folder)
    return folders[0], folders[1]


def model_fingerprints(catalog: Catalog) -> dict[str, str | None]:
    """The fingerprint of each learnt model of the catalogue (``None`` where there is none)."""
    out = {}
    for name in (approaches_mod.AUTOENCODER, approaches_mod.TUNED):
        directory = approaches_mod.get(name).model_dir(catalog)
        out[name] = read_manifest(directory).get("fingerprint") if (directory / "manifest.json").is_file() else None
    return out


def store_rows(catalog: Catalog) -> dict[str, dict[str, int]]:
    """Per store: its row count, how many rows were reused, and how many were computed afresh."""
    out = {}
    for name in approaches_mod.names():
        directory = approaches_mod.get(name).store_dir(catalog)
        if (directory / "manifest.json").is_file():
            manifest = read_manifest(directory)
            rows, reused = int(manifest["count"]), int(manifest.get("reused_rows", 0))
            out[name] = {"rows": rows, "reused": reused, "computed": rows - reused}
    return out


def full_build(base: Path, out: Path) -> dict[str, Any]:
    """Builds ``base`` into ``out`` from nothing with every approach's defaults; its record."""
    shutil.rmtree(out, ignore_errors=True)
    options = BuildOptions(labels=str(base / "labels.csv"), label_column=LABEL)
    catalog, record = timed(lambda: build(str(base), out, options, progress=progress_factory, log=log))
    record.update(items=len(catalog.ok), stores=store_rows(catalog), models=model_fingerprints(catalog))
    return record


def change_steps(full: Path, changed: Path, added: Path, n_remove: int, seed: int) -> dict[str, Any]:
    """Copies the built catalogue and times an add + refresh and a remove + refresh on the copy."""
    shutil.rmtree(changed, ignore_errors=True)
    shutil.copytree(full, changed, symlinks=True)
    catalog = Catalog.load(changed)
    before = model_fingerprints(catalog)
    original_ids = catalog.ok["id"].tolist()
    steps: dict[str, Any] = {}

    log(f"add: {added}")
    (catalog, counts), ingest = timed(lambda: add_items(changed, str(added), labels=added / "labels.csv",
                                                        label_column=LABEL, progress=progress_factory("add")))
    _, update = timed(lambda: refresh(catalog, progress=progress_factory, log=log))
    steps["add"] = {"counts": counts, "ingest": ingest, "refresh": update, "items": len(catalog.ok),
                    "stores": store_rows(catalog), "models": model_fingerprints(catalog)}

    gone = sorted(np.random.default_rng(seed + 1).choice(original_ids, n_remove, replace=False).tolist())
    log(f"remove: {n_remove} items, e.g. {', '.join(gone[:3])}")
    (catalog, removed), ingest = timed(lambda: remove_items(changed, gone))
    _, update = timed(lambda: refresh(catalog, progress=progress_factory, log=log))
    steps["remove"] = {"counts": {"removed": removed}, "ingest": ingest, "refresh": update,
                       "items": len(catalog.ok), "stores": store_rows(catalog), "models": model_fingerprints(catalog)}
    for step in steps.values():
        step["seconds"] = round(step["ingest"]["seconds"] + step["refresh"]["seconds"], 2)
        step["cpu_seconds"] = round(step["ingest"]["cpu_seconds"] + step["refresh"]["cpu_seconds"], 2)
        step["models_unchanged"] = step["models"] == before
    return steps


def table(report: dict[str, Any]) -> str:
    """The markdown table of the three steps."""
    full = report["full_build"]
    lines = ["| step | items after | wall s | ratio to full build | CPU s | CPU ratio | rows computed / reused "
             "(pretrained, autoencoder) | models retrained |",
             "|---|---|---|---|---|---|---|---|",
             f"| full build | {full['items']} | {full['seconds']:.1f} | 100% | {full['cpu_seconds']:.1f} | 100% | "
             + ", ".join(f"{s['computed']}/{s['reused']}" for n, s in full["stores"].items() if n != "tuned")
             + " | trained |"]
    for name, step in report["steps"].items():
        stores = ", ".join(f"{s['computed']}/{s['reused']}" for n, s in step["stores"].items() if n != "tuned")
        lines.append(
            f"| {name} {step['counts'].get('added', step['counts'].get('removed'))} + refresh | {step['items']} | "
            f"{step['seconds']:.1f} ({step['ingest']['seconds']:.1f} + {step['refresh']['seconds']:.1f}) | "
            f"{100 * step['seconds'] / full['seconds']:.2f}% | {step['cpu_seconds']:.1f} | "
            f"{100 * step['cpu_seconds'] / max(full['cpu_seconds'], 1e-9):.2f}% | {stores} | "
            f"{'none' if step['models_unchanged'] else 'YES'} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled folder with labels.csv")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgsim-changes"), help="where everything is written")
    parser.add_argument("--reuse", type=Path, help="a --work folder whose full build to reuse (skips step 1)")
    parser.add_argument("--held-out", type=int, default=100, help="items added, and items removed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="build from this many photos only (a check, not a result)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "labels.csv").exists():
        print(f"skipped: {args.data} is absent (the labelled myntra_eval folder)")
        return 0
    if args.held_out < 1:
        raise ValueError(f"`held_out` must be >= 1. Received: held_out={args.held_out}")
    # Import Keras before any timed step, so a --reuse run's first step is not charged for it
    # (a full build's process has it imported by the time it adds or removes).
    import keras  # noqa: F401

    work = args.reuse or args.work
    if args.reuse:
        full = json.loads((work / RECORD).read_text())
        log(f"reusing the full build of {work / 'full'} ({full['seconds']:.1f} s)")
    else:
        work.mkdir(parents=True, exist_ok=True)
        (work / RECORD).unlink(missing_ok=True)
        base, _ = split(args.data, work, args.held_out, args.seed, args.limit)
        log(f"full build of {base}, load {loadavg()}")
        full = full_build(base, work / "full")
        full.update(held_out=args.held_out, seed=args.seed, limit=args.limit, data=str(args.data))
        (work / RECORD).write_text(json.dumps(full, indent=2))
        log(f"full build: {full['seconds']:.1f} s wall, {full['cpu_seconds']:.1f} s CPU")
    steps = change_steps(work / "full", work / "changed", work / "added", full["held_out"], full["seed"])
    report = {"full_build": full, "steps": steps, "cpu_count": os.cpu_count(),
              "target": "each change under 5% of the full build's seconds"}
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
