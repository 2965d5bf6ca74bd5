"""Search latency: exact top-k scaling on synthetic vectors, and end-to-end phone-photo queries.

1. Exact search (``imgsim.search.Index``, k = 10) over N unit vectors at the dims of both
   approaches, next to the memory-bandwidth floor (one numpy matrix-vector product plus
   ``argpartition`` over the same matrix); median and p95 over repetitions, and the matrix size.
2. With a catalogue: a 12-megapixel phone JPEG (EXIF-rotated) through ``Engine.search``
   (decode, orientation, resize, embed, search) and the search step alone, p50 and p95.

    .venv/bin/python benchmarks/search.py [--sizes 10000 100000 1000000] [--catalog /tmp/myntra]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imgsim.search import Index  # noqa: E402


def timings(fn, reps: int) -> dict[str, float]:
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return {"p50_ms": statistics.median(out), "p95_ms": out[min(len(out) - 1, int(0.95 * len(out)))]}


def phone_jpeg() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (189, 252, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((4032, 3024), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 1280])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--catalog", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    report: dict = {"scaling": []}
    if args.catalog:
        from imgsim.engine import Engine

        engine = Engine.open(args.catalog)
        data = phone_jpeg()
        report["query"] = {}
        print(f"12 MP phone JPEG ({len(data) / 1e6:.1f} MB, EXIF-rotated) against {len(engine.items):,} items")
        for approach in engine.approaches():
            engine.search(data, approach, 10)
            e2e = timings(lambda a=approach: engine.search(data, a, 10), max(5, args.reps // 2))
            vector = np.asarray(engine.store(approach).embeddings[0])
            idx = engine.index(approach)
            alone = timings(lambda v=vector, i=idx: i.search(v, 10), args.reps)
            report["query"][approach] = {"end_to_end": e2e, "search_only": alone}
            print(f"  {approach:<12} end to end {e2e['p50_ms']:7.1f} ms p50 {e2e['p95_ms']:7.1f} p95 | "
                  f"search alone {alone['p50_ms']:6.2f} ms p50 {alone['p95_ms']:6.2f} p95")
        report["rss_with_engine_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  peak RSS with the catalogue and its models loaded: {report['rss_with_engine_mb']:.0f} MB\n")
    print("exact top-10 search, one query (ms): imgsim | floor (matvec + argpartition)")
    for dim in args.dims:
        for n in args.sizes:
            x = rng.standard_normal((n, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            q = x[rng.integers(n)] + 0.01
            index = Index(x)
            ours = timings(lambda i=index, v=q: i.search(v, 10), args.reps)
            floor = timings(lambda m=x, v=q: np.argpartition(-(m @ v), 10)[:10], args.reps)
            row = {"n": n, "dim": dim, "mb": x.nbytes / 2**20, "imgsim": ours, "floor": floor}
            report["scaling"].append(row)
            print(f"  N={n:>9,} dim={dim:>5} ({row['mb']:7.0f} MB): {ours['p50_ms']:8.2f} p50 {ours['p95_ms']:8.2f} p95"
                  f" | {floor['p50_ms']:8.2f} p50", flush=True)
            del x, index
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {report['peak_rss_mb']:.0f} MB")
    (args.out / "search.json").write_text(json.dumps(report, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for dim in args.dims:
        rows = [r for r in report["scaling"] if r["dim"] == dim]
        ax.loglog([r["n"] for r in rows], [r["imgsim"]["p50_ms"] for r in rows], "o-", label=f"imgsim, {dim}-d")
        ax.loglog([r["n"] for r in rows], [r["floor"]["p50_ms"] for r in rows], "k:", alpha=0.5)
    ax.set(xlabel="catalogue size N", ylabel="top-10 latency (ms, p50)", title="Exact search (dotted: bandwidth floor)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(args.out / "search_scaling.png", dpi=110)


if __name__ == "__main__":
    main()
