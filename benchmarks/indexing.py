"""Indexing throughput: the whole pipeline vs the model alone vs the article's per-image loop.

Runs the three, alternating, after a warm-up, on the same machine and in the same process, and
prints images/second (median and spread over repetitions) plus the pipeline/model ratio.

    .venv/bin/python benchmarks/indexing.py [--images DIR] [--n 512] [--reps 3]

Without --images it uses ../shared/data/myntra_eval/images when present, else synthetic JPEGs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from imgsim.approaches.features import load_extractor
from imgsim.ingest.images import encode_jpeg, load_square
from imgsim.storage.stores import iter_batches

MYNTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra_eval" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=MYNTRA if MYNTRA.is_dir() else None)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--vgg", action="store_true",
                        help="also time vgg16_fc1 (random weights if its ImageNet file is absent)")
    args = parser.parse_args()

    if args.images is None:
        tmp = Path(tempfile.mkdtemp())
        rng = np.random.default_rng(0)
        for i in range(args.n):
            (tmp / f"{i}.jpg").write_bytes(encode_jpeg(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)))
        args.images = tmp
    paths = sorted(args.images.glob("*.jpg"))[: args.n]
    extractor = load_extractor("efficientnet_lite0")
    decoded = np.stack([load_square(p, 224) for p in paths[: args.batch]])
    extractor.embed(decoded)  # warm-up

    def model_alone() -> float:
        t = time.perf_counter()
        done = 0
        while done < len(paths):
            extractor.embed(decoded)
            done += len(decoded)
        return done / (time.perf_counter() - t)

    def pipeline() -> float:
        t = time.perf_counter()
        for batch in iter_batches(paths, 224, args.batch):
            extractor.embed(batch)
        return len(paths) / (time.perf_counter() - t)

    def per_image_predict() -> float:  # the article: model.predict on one image at a time
        subset = paths[:32]
        t = time.perf_counter()
        for p in subset:
            extractor.model.predict(load_square(p, 224)[None], verbose=0)
        return len(subset) / (time.perf_counter() - t)

    runs: dict[str, list[float]] = {"model_alone": [], "pipeline": [], "per_image_predict": []}
    for _ in range(args.reps):
        for name, fn in (("model_alone", model_alone), ("pipeline", pipeline), ("per_image_predict", per_image_predict)):
            runs[name].append(fn())
    report = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in runs.items()}
    report["pipeline_over_model"] = report["pipeline"]["median"] / report["model_alone"]["median"]
    report["pipeline_over_per_image"] = report["pipeline"]["median"] / report["per_image_predict"]["median"]
    print(f"efficientnet_lite0, batch {args.batch}, {len(paths)} images from {args.images}, {args.reps} reps")
    for name in runs:
        r = report[name]
        print(f"  {name:<18} {r['median']:7.1f} img/s  (min {r['min']:.1f}, max {r['max']:.1f})")
    print(f"  pipeline / model alone: {report['pipeline_over_model']:.2f}; "
          f"pipeline / per-image predict: {report['pipeline_over_per_image']:.1f}x")
    if args.vgg:
        vgg = load_extractor("vgg16_fc1", allow_random_weights=True)
        vgg.embed(decoded)
        speeds = []
        for _ in range(args.reps):
            t = time.perf_counter()
            vgg.embed(decoded)
            speeds.append(len(decoded) / (time.perf_counter() - t))
        report["vgg16_fc1_model_alone"] = {"median": statistics.median(speeds), "min": min(speeds), "max": max(speeds)}
        print(f"  vgg16_fc1 model alone {statistics.median(speeds):7.1f} img/s (4096-d; "
              f"{report['model_alone']['median'] / statistics.median(speeds):.1f}x slower than Lite0)")
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of this process: {report['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
