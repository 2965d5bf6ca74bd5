"""Milvus HNSW recall@10 and latency against exact search, for choosing M, efConstruction and ef.

Exports vectors through :class:`imgsim.index.milvus.MilvusBackend` (Milvus Lite embedded, or a server
with ``--uri http://127.0.0.1:PORT``), then queries a fresh connection, so that the HNSW index is
what answers (rows still in Milvus Lite's write buffer are searched exactly), and compares the
top-10 ids with :class:`imgsim.index.exact.Index`.

Data sets:
  * ``test``: 300 random unit vectors, 16-d, three categories (the shape of tests/test_milvus.py).
  * ``real``: EfficientNet-Lite0 embeddings (1,280-d) of the first ``--real`` myntra_eval photos
    plus perturbed copies up to ``--n`` rows (each copy: a real row plus gaussian noise of
    ``--noise`` times its norm), so near-duplicates and clusters look like a real catalogue;
    the queries are the next ``--queries`` photos, which the collection does not hold.
  * ``clustered``: when the photos or the model are missing: ``--n`` 1,280-d non-negative
    vectors from 60 clusters on a 64-d latent (ReLU of a random projection).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/milvus_recall.py [--n 5000] [--real 800]
        [--efs 16,32,64,128,256] [--queries 200] [--uri PATH.db]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from imgsim.index.exact import Index
from imgsim.index.milvus import KIND, MilvusBackend

MYNTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra_eval" / "images"


def test_like(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(300, 16)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, dim: int = 1280) -> np.ndarray:
    centres = rng.normal(size=(60, 64))
    latent = centres[rng.integers(0, 60, n)] + 0.6 * rng.normal(size=(n, 64))
    return np.maximum(latent @ rng.normal(size=(64, dim)) / 8.0, 0.0).astype(np.float32)


def real_embeddings(n_real: int, cache: Path | None) -> np.ndarray:
    """EfficientNet-Lite0 embeddings of the first ``n_real`` myntra_eval photos (cached as .npy if asked)."""
    if cache is not None and cache.exists():
        real = np.load(cache, allow_pickle=False)
        if len(real) >= n_real:
            return real[:n_real]
    from imgsim.approaches.features import load_extractor
    from imgsim.ingest.images import load_square

    extractor = load_extractor()
    paths = sorted(MYNTRA.glob("*.jpg"))[:n_real]
    parts = []
    for i in range(0, len(paths), 32):
        batch = np.stack([load_square(p, extractor.image_size) for p in paths[i:i + 32]])
        parts.append(np.asarray(extractor.embed(batch), np.float32))
    real = np.concatenate(parts)
    if cache is not None:
        np.save(cache, real, allow_pickle=False)
    return real


def real_plus_copies(rng: np.random.Generator, real: np.ndarray, n: int, noise: float) -> np.ndarray:
    """The real rows plus noisy copies of them, ``n`` rows in all."""
    base = real[rng.integers(0, len(real), n - len(real))]
    scale = noise * np.linalg.norm(base, axis=1, keepdims=True) / np.sqrt(real.shape[1])
    copies = base + scale * rng.normal(size=base.shape).astype(np.float32)
    return np.concatenate([real, copies]).astype(np.float32)


def measure(uri: str, name: str, vectors: np.ndarray, queries: np.ndarray, efs: list[int], m: int,
            ef_construction: int, k: int = 10) -> list[dict]:
    n, dim = vectors.shape
    ids = [f"r{i}" for i in range(n)]
    categories = [f"c{i % 3}" for i in range(n)]
    manifest = {"kind": KIND, "format_version": 1, "dim": dim, "metric": "cosine",
                "index": {"type": "HNSW", "M": m, "efConstruction": ef_construction, "ef": efs[0]}}
    started = time.perf_counter()
    with MilvusBackend(uri) as backend:
        backend.export_arrays(name, ids, vectors, categories, [""] * n, manifest=manifest)
    export_s = time.perf_counter() - started
    exact = Index(vectors)
    truth = exact.search(queries, k).rows
    mask = np.array([c == "c1" for c in categories])
    truth_cat = exact.search(queries, k, mask=mask).rows
    rows = []
    with MilvusBackend(uri) as backend:
        started = time.perf_counter()
        backend.search(name, queries[:1], k)  # loads the collection (builds or reads the HNSW files)
        load_s = time.perf_counter() - started
        for ef in efs:
            backend.ef = ef
            latencies, found, found_cat = [], [], []
            for q in queries:
                t0 = time.perf_counter()
                hits = backend.search(name, q[None], k)[0]
                latencies.append(time.perf_counter() - t0)
                found.append([int(i[1:]) for i, _ in hits])
                found_cat.append([int(i[1:]) for i, _ in backend.search(name, q[None], k, category="c1")[0]])
            recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])
            recall_cat = np.mean([len(set(f) & set(t)) / k for f, t in zip(found_cat, truth_cat)])
            rows.append({"data": name, "n": n, "dim": dim, "M": m, "efConstruction": ef_construction, "ef": ef,
                         "recall@10": round(float(recall), 4), "recall@10_category": round(float(recall_cat), 4),
                         "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
                         "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
                         "export_s": round(export_s, 2), "first_load_s": round(load_s, 2)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--real", type=int, default=800, help="real photos embedded (0: clustered synthetic)")
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--efs", default="16,32,64,128,256")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--data", default="test,real")
    parser.add_argument("--uri", help="a .db path or http://127.0.0.1:PORT (default: a temporary .db)")
    parser.add_argument("--real-cache", type=Path, help="an .npy file to keep the real embeddings in between runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    efs = [int(e) for e in args.efs.split(",")]
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.uri or str(Path(tmp) / "bench.db")
        for data in args.data.split(","):
            if data == "test":
                vectors = test_like(rng)
            elif data == "real" and args.real and MYNTRA.is_dir():
                # Held-out photos are the queries: products the collection has not seen.
                real = real_embeddings(args.real + args.queries, args.real_cache)
                vectors = real_plus_copies(rng, real[:args.real], args.n, args.noise)
                queries = real[args.real:]
            else:
                data = "clustered"
                vectors = clustered(rng, args.n)
            if data != "real":
                # Stored rows plus noise, like a new photo of a catalogue product.
                picks = vectors[rng.integers(0, len(vectors), args.queries)]
                queries = picks + 0.1 * picks.std() * rng.normal(size=picks.shape).astype(np.float32)
            results += measure(uri, f"bench_{data}", vectors, queries, efs, args.m, args.ef_construction)
    print(f"loadavg {open('/proc/loadavg').read().split()[:3]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
