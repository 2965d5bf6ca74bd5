"""Autoencoder training throughput: the article's `seed` variant against `conv`, same input size.

Both are trained on the same images, alternating, for a few repetitions after a warm-up epoch;
prints parameters and training images/second (median, min, max) and the ratio.

    .venv/bin/python benchmarks/autoencoder.py [--size 64] [--n 512] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgsim.autoencoder import build_conv, build_seed  # noqa: E402
from imgsim.features import _keras  # noqa: E402
from imgsim.images import load_square  # noqa: E402

MYNTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra_eval" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--base-filters", type=int, default=32, help="the conv variant's first-stage filters")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keras = _keras()
    if MYNTRA.is_dir():
        images = np.stack([load_square(p, args.size) for p in sorted(MYNTRA.glob("*.jpg"))[: args.n]])
    else:
        images = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    targets = images.astype(np.float32) / 255.0
    models = {"seed": build_seed(args.size, 16)[0], "conv": build_conv(args.size, 128, args.base_filters)[0]}
    for model in models.values():
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        model.fit(images[:64], targets[:64], batch_size=32, epochs=1, verbose=0)  # warm-up
    runs: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.reps):
        for name, model in models.items():
            t = time.perf_counter()
            model.fit(images, targets, batch_size=32, epochs=1, verbose=0)
            runs[name].append(len(images) / (time.perf_counter() - t))
    report = {name: {"parameters": int(models[name].count_params()),
                     "median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in runs.items()}
    report["conv_over_seed"] = report["conv"]["median"] / report["seed"]["median"]
    print(f"training throughput at {args.size}x{args.size}, batch 32, {len(images)} images, {args.reps} reps")
    for name in models:
        r = report[name]
        print(f"  {name:<5} {r['parameters']:>11,} params  {r['median']:7.1f} img/s  (min {r['min']:.1f}, max {r['max']:.1f})")
    print(f"  conv / seed: {report['conv_over_seed']:.1f}x faster per epoch")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
