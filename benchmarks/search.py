"""Search latency: exact top-k scaling on synthetic vectors, and end-to-end phone-photo queries.

1. Exact search (``imgsim.index.exact.Index``, k = 10) over N unit vectors at the dims of both
   approaches, next to the memory-bandwidth floor (one numpy matrix-vector product plus
   ``argpartition`` over the same matrix); median and p95 over repetitions, and the matrix size.
2. With a catalogue: a 12-megapixel phone JPEG (EXIF-rotated) through ``Engine.search``
   (decode, orientation, resize, embed, search) and the search step alone, p50 and p95.

3. With ``--ann``: every index side by side at ``--ann-sizes`` rows (``--ann-dims`` dims) on the same
   realistic vectors: ``--n-real`` real EfficientNet-Lite0 embeddings of the myntra_eval photos
   (cached in ``--cache``; the tuned LDA for low dims) plus perturbed copies (relative noise
   0.1-0.6: a copy's cosine to its original spans 0.99-0.86, about the spread of real nearest
   neighbours), kept as float16; clustered Gaussian vectors stand in without the photos. Truth is
   exact top 10 on ``--queries`` held-out perturbed queries. Methods (``benchmarks/ann_methods.py``):
   exact, IVF-PQ re-ranked on sq8 or float16 vectors (``imgsim.index.ivfpq``, served memory-mapped
   as from a catalogue), HNSW over the full vectors and over 128-d PCA projections re-ranked
   (``imgsim.index.hnsw``; past ``--hnsw-max`` rows built over ``--probe`` rows and extrapolated),
   and Milvus Lite (up to ``--milvus-max`` rows). Columns: build s, resident MB, p50/p95 of single
   queries on one thread, recall@10, and recall, result count and p50 under category filters of
   about 1% and 20% of the rows; the IVF-PQ rows add a region query (17 vectors at once). The
   targets at 1M x 1280 are printed beside, and the load average on every row.

    .venv/bin/python benchmarks/search.py [--sizes 10000 100000 1000000] [--catalog /tmp/myntra]
    .venv/bin/python benchmarks/search.py --ann --data /work/shared/data/myntra_eval \
        [--ann-sizes 100000 1000000] [--ann-dims 1280] [--methods IVF-PQ HNSW Milvus] [--json /tmp/ann.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from imgsim.index.exact import Index


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
    parser.add_argument("--ann", action="store_true", help="exact vs approximate index (section 3) only")
    parser.add_argument("--ann-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--ann-dims", type=int, nargs="+", default=[1280])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--n-real", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/myntra_eval"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/imgsim-bench"))
    parser.add_argument("--json", type=Path, help="also write the ANN report here")
    parser.add_argument("--methods", nargs="+", default=["IVF-PQ", "HNSW", "Milvus"],
                        help="which indexes --ann compares (first word of their names)")
    parser.add_argument("--hnsw-max", type=int, default=200_000,
                        help="HNSW graphs are built up to this many rows; above, timed on --probe rows and extrapolated")
    parser.add_argument("--milvus-max", type=int, default=100_000, help="Milvus Lite up to this many rows (0: never)")
    parser.add_argument("--probe", type=int, default=20_000)
    args = parser.parse_args()
    if args.ann:
        ann_main(args)
        return
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


# ----------------------------------------------------------------------------------------------
# 3. Exact search against the approximate index, on realistic vectors.

EXACT_CHUNK = 250_000  # float32 rows per exact-search chunk: 1.2 GB at 1280-d


def load_average() -> float:
    """The 1-minute load average (other work on the machine slows every timing)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def real_embeddings(data: Path, n_real: int, cache: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(n, 1280)`` Lite0 embeddings of ``n_real`` myntra_eval photos and their labels, cached.

    Returns None when the photos are not on this machine.
    """
    table_path = data / "labels.csv"
    if not table_path.exists():
        return None
    emb_file, label_file = cache / f"lite0_{n_real}.npy", cache / f"lite0_{n_real}_labels.npy"
    if emb_file.exists() and label_file.exists():
        return np.load(emb_file, allow_pickle=False), np.load(label_file, allow_pickle=False)
    import pandas as pd

    from imgsim.approaches.features import load_extractor
    from imgsim.storage.stores import iter_batches

    table = pd.read_csv(table_path)
    table = table.iloc[np.sort(np.random.default_rng(0).choice(len(table), min(n_real, len(table)), replace=False))]
    extractor = load_extractor("efficientnet_lite0")
    started = time.perf_counter()
    paths = [data / p for p in table["path"]]
    x = np.concatenate([extractor.embed(b) for b in iter_batches(paths, extractor.image_size, 64)])
    labels = table["label"].fillna("").to_numpy(dtype=str)
    print(f"embedded {len(x):,} photos in {time.perf_counter() - started:.0f} s; cached in {cache}", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(emb_file, x.astype(np.float32), allow_pickle=False)
    np.save(label_file, labels, allow_pickle=False)
    return x.astype(np.float32), labels


def base_vectors(args: argparse.Namespace, dim: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Unit ``(B, d)`` originals, a category label per original, and where they came from."""
    real = real_embeddings(args.data, args.n_real, args.cache)
    if real is None:
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((500, dim)).astype(np.float32)
        cluster = rng.integers(0, 500, args.n_real)
        x = centres[cluster] + 0.5 * rng.standard_normal((args.n_real, dim)).astype(np.float32)
        labels, source = (cluster % 40).astype(str), "clustered Gaussian (no photos here)"
    else:
        x, labels = real
        source = "Lite0 photos"
        if dim != x.shape[1]:
            from imgsim.approaches.tuned import fit_projection

            x = fit_projection(x, labels, dims=dim).apply(x)
            source = f"Lite0 photos, tuned LDA ({x.shape[1]} dims: at most classes - 1)"
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels, source


def perturbed(base: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit copies of random originals with relative noise 0.1-0.6, and their originals."""
    origin = rng.integers(0, len(base), n)
    noise = rng.standard_normal((n, base.shape[1]), dtype=np.float32)
    noise *= (rng.uniform(0.1, 0.6, n) / np.linalg.norm(noise, axis=1)).astype(np.float32)[:, None]
    y = base[origin] + noise
    return y / np.linalg.norm(y, axis=1, keepdims=True), origin


def catalogue_matrix(base: np.ndarray, n: int, dtype: type, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, d)`` matrix: the originals, then perturbed copies; and each row's original."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, base.shape[1]), dtype=dtype)
    origin = np.empty(n, dtype=np.int64)
    first = min(n, len(base))
    x[:first], origin[:first] = base[:first], np.arange(first)
    for start in range(first, n, 65_536):
        stop = min(n, start + 65_536)
        x[start:stop], origin[start:stop] = perturbed(base, stop - start, rng)
    return x, origin


def exact_reference(x: np.ndarray, queries: np.ndarray, k: int, masks: dict[str, np.ndarray | None],
                    reps: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Exact top-k rows per mask, over float32 chunks, and one query's latency summed over them."""
    found: dict[str, list] = {name: [] for name in masks}
    p50 = p95 = 0.0
    for start in range(0, len(x), EXACT_CHUNK):
        chunk = np.asarray(x[start:start + EXACT_CHUNK], dtype=np.float32)
        index = Index(chunk)
        for name, mask in masks.items():
            part = None if mask is None else mask[start:start + len(chunk)]
            if part is not None and not part.any():
                continue
            hits = index.search(queries, k, mask=part)
            found[name].append((hits.rows + start, hits.scores))
        t = timings(lambda i=index, v=queries[0]: i.search(v, k), reps)
        p50, p95 = p50 + t["p50_ms"], p95 + t["p95_ms"]
        del chunk, index
    truth = {}
    for name, parts in found.items():
        rows = np.concatenate([r for r, _ in parts], axis=1)
        scores = np.concatenate([s for _, s in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        truth[name] = np.take_along_axis(rows, order, axis=1)
    return truth, {"p50_ms": p50, "p95_ms": p95}


def ann_main(args: argparse.Namespace) -> None:
    """Section 3: every index side by side at each size, on the same vectors; a table, and JSON."""
    import ann_methods as am
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")  # single-query timings on one thread (FAISS's own are set per call)
    report: dict = {"queries": args.queries, "k": 10, "cpu_count": os.cpu_count(), "runs": []}
    for dim in args.ann_dims:
        base, labels, source = base_vectors(args, dim)
        queries, _ = perturbed(base, args.queries, np.random.default_rng(12345))
        values, counts = np.unique(labels, return_counts=True)
        share = counts / counts.sum()
        filters = {f"{p:.0%}": values[np.argmin(np.abs(share - p))] for p in (0.01, 0.20)}
        for n in args.ann_sizes:
            started = time.perf_counter()
            # float16 at 1280-d: half the memory (2.5 GB at 1M), what the indexes re-rank on anyway.
            x, origin = catalogue_matrix(base, n, np.float16 if dim > 256 else np.float32)
            row_labels = labels[origin]
            masks = {name: row_labels == value for name, value in filters.items()}
            truth, exact_lat = exact_reference(x, queries, 10, {"none": None, **masks}, max(5, args.reps // 2))
            real_dim = x.shape[1]
            shares = ", ".join(f"{name}: {filters[name]} {m.mean():.1%} of rows" for name, m in masks.items())
            print(f"\nN={n:,} dim={real_dim} ({source}); matrix {x.nbytes / 2**20:,.0f} MB {x.dtype}; filters "
                  f"{shares}; exact ground truth in {time.perf_counter() - started:.0f} s; load {load_average():.2f}",
                  flush=True)
            runs = [{"method": f"exact ({-(-n // EXACT_CHUNK)} float32 chunk(s) of the float16 matrix)",
                     "setting": "", "build_s": 0.0, "recall@10": 1.0, **exact_lat, "chosen": True,
                     "resident_mb": x.nbytes / 2**20,
                     **{f"{key} {name}": value for name in masks for key, value in (("recall", 1.0), ("count", 10))}}]
            shared: dict = {}
            methods = [am.ivfpq_method("sq8", row_labels, shared), am.ivfpq_method("float16", row_labels, shared),
                       am.hnsw_method(True, args.hnsw_max), am.hnsw_method(False, args.hnsw_max)]
            if args.milvus_max:
                methods.append(am.milvus_method(row_labels, args.milvus_max))
            for method in methods:
                if method.name.split()[0] not in args.methods:
                    continue
                runs += am.measure(method, x, queries, truth, masks, args.probe, lambda line: print(line, flush=True))
            for run in runs:
                run.update(n=n, dim=real_dim, source=source, load=load_average())
            report["runs"] += runs
            del x, origin, truth, masks
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_ann_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))


def print_ann_table(report: dict) -> None:
    """The chosen setting of each method as a markdown table, with the targets at 1M x 1280."""
    print("\nTargets at 1M x 1280: build <= 1200 s; p50 <= 5 ms (one thread) at recall@10 >= 0.95; "
          "filtered queries return 10 at recall >= 0.95; index + re-rank data resident <= 2048 MB.")
    print("\n| N | method | setting | build s | resident MB | p50 / p95 ms | recall@10 | 1% filter: recall, count, p50 ms "
          "| 20% filter: recall, count, p50 ms | regions p50 ms | load |")
    print("|---:|---|---|---:|---:|---:|---:|---|---|---:|---:|")
    for r in report["runs"]:
        if not r.get("chosen") and "extrapolated" not in r:
            continue
        if "extrapolated" in r:
            print(f"| {r['n']:,} | {r['method']} | not built | ~{r['build_s']:,.0f} ({r['extrapolated']}) "
                  f"| | | | | | | {r['load']:.1f} |")
            continue
        filt = [f"{r.get(f'recall {p}', float('nan')):.3f}, {r.get(f'count {p}', '')}, {r.get(f'p50 {p}', float('nan')):.1f}"
                for p in ("1%", "20%")]
        regions = f"{r['regions_p50_ms']:.1f}" if "regions_p50_ms" in r else ""
        print(f"| {r['n']:,} | {r['method']} | {r['setting']} | {r['build_s']:.0f} | {r.get('resident_mb', 0):,.0f} "
              f"{' (' + format(r['mapped_mb'], ',.0f') + ' mapped)' if 'mapped_mb' in r else ''} "
              f"| {r['p50_ms']:.2f} / {r['p95_ms']:.2f} | {r['recall@10']:.3f} | {filt[0]} | {filt[1]} | {regions} "
              f"| {r['load']:.1f} |")
    print(f"\npeak RSS {report['peak_rss_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
