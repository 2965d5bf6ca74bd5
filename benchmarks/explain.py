"""How long a why-similar map takes: one query photo against one result, on this machine's CPUs.

Times :func:`imgsim.analysis.explain.explain_images` (both photos through the CNN in one batch,
the cell matching, the upsampling) and the overlay rendering, on simulated phone photos (a
scikit-image sample pasted into a procedural 800x600 scene, decoded as a query is, at most
768 px) against 256 px studio shots, after one warm-up call (the graph is traced once per
process). With ``--catalog`` it explains the top ``-k`` results of a search in that catalogue
instead, through :func:`imgsim.explain`::

    .venv/bin/python benchmarks/explain.py [--repeats 20] [--catalog demo -k 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imgsim  # noqa: E402
from imgsim import phonesim  # noqa: E402
from imgsim.analysis.explain import ExplainConfig, explain_images  # noqa: E402


def pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (phone photo, studio shot) pairs from scikit-image's samples."""
    from skimage import data

    phonesim._samples = []  # procedural scenes only
    names = ["chelsea", "coffee", "rocket", "astronaut"]
    out = []
    for i in range(n):
        product = np.asarray(Image.fromarray(getattr(data, names[i % len(names)])()[..., :3]).resize((256, 192)))
        canvas = Image.fromarray(phonesim.make_scene(np.random.default_rng(i), (800, 600)))
        canvas.paste(Image.fromarray(product).resize((320, 240)), (400, 250))
        canvas.thumbnail((768, 768))
        out.append((np.asarray(canvas), product))
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "median_ms": round(float(np.median(ms)), 1), "p90_ms": round(float(np.quantile(ms, 0.9)), 1),
            "max_ms": round(float(ms.max()), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=ExplainConfig().input_size)
    parser.add_argument("--catalog", help="explain real search results of this catalogue")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()
    config = ExplainConfig(input_size=args.size)
    work = pairs(args.repeats)
    explain_images(*work[0], config=config)  # warm-up: loads the model, traces the graph
    explained, rendered = [], []
    for query, result in work:
        t0 = time.perf_counter()
        found = explain_images(query, result, config=config)
        explained.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        found.image()
        rendered.append(time.perf_counter() - t0)
    results = {"input_size": args.size, "explain": summary(explained), "render": summary(rendered),
               "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if args.catalog:
        from imgsim.arguments import resolve_catalog

        engine = imgsim.Engine.open(resolve_catalog(args.catalog))
        query = work[0][0]
        ids = engine.search(query, "pretrained", args.k).ids
        seconds = []
        for item in ids:
            t0 = time.perf_counter()
            imgsim.explain(engine, query, item, config=config).image()
            seconds.append(time.perf_counter() - t0)
        results["catalog_results"] = summary(seconds)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
