"""The indexes ``benchmarks/search.py --ann`` compares side by side, each measured the same way.

Each method builds over the same ``(N, dim)`` float16 matrix and is asked the same held-out
queries; :func:`measure` sweeps its search settings (recall@10 against exact search, p50/p95 of
single queries on one thread), keeps the first setting reaching recall 0.95 (else the last), and
asks it the category-filtered queries. A method too slow to build at this size is built over a
``probe`` of the rows and its build time extrapolated (``N log N``), marked as such.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TARGET_RECALL = 0.95


def rss_mb() -> float:
    """Resident memory of this process now (MB), file-backed pages of memory maps included."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mapped_mb(directory: str) -> float:
    """Resident MB of this process's memory maps of files under ``directory`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
            inside = len(head) >= 6 and head[5].startswith(directory)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total / 1024


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k found (``-1`` pads count as misses)."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def latency(fn: Callable[[np.ndarray], Any], queries: np.ndarray) -> dict[str, float]:
    """p50/p95 (ms) of ``fn(query)`` on each ``(1, dim)`` query alone, after one warm-up."""
    fn(queries[:1])
    out = []
    for i in range(len(queries)):
        t = time.perf_counter()
        fn(queries[i:i + 1])
        out.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": float(np.percentile(out, 50)), "p95_ms": float(np.percentile(out, 95))}


@dataclasses.dataclass
class Method:
    """One index: how to build it, search it, and the settings swept.

    ``search(obj, queries, k, mask, setting) -> (Q, <=k) rows`` (``-1`` for a missing result).
    """

    name: str
    build: Callable[[np.ndarray], tuple[Any, dict[str, Any]]]
    search: Callable[[Any, np.ndarray, int, np.ndarray | None, Any], np.ndarray]
    settings: list[Any]
    max_rows: int | None = None  # built only up to this many rows; above, extrapolated from a probe


def discard(obj: Any, info: dict[str, Any]) -> None:
    """Closes what a method built and deletes the files it wrote (a saved index, a Milvus Lite database)."""
    if hasattr(obj, "close"):
        obj.close()
    if "dir" in info:
        shutil.rmtree(info["dir"], ignore_errors=True)


def measure(method: Method, x: np.ndarray, queries: np.ndarray, truth: dict[str, np.ndarray],
            masks: dict[str, np.ndarray], probe: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Builds ``method`` over ``x`` and measures it; one dict per setting swept (the chosen one marked)."""
    n = len(x)
    if method.max_rows is not None and n > method.max_rows:
        t = time.perf_counter()
        discard(*method.build(x[:probe]))
        probe_s = time.perf_counter() - t
        build_s = probe_s * (n / probe) * math.log(n) / math.log(probe)
        log(f"  {method.name}: not built at {n:,} rows; {probe_s:.0f} s over {probe:,} rows -> ~{build_s:,.0f} s")
        return [{"method": method.name, "build_s": build_s, "extrapolated": f"from {probe:,} rows in {probe_s:.0f} s"}]
    before = rss_mb()
    t = time.perf_counter()
    obj, info = method.build(x)
    build_s = info.pop("build_s", time.perf_counter() - t)
    rows, chosen = [], None
    for setting in method.settings:
        found = method.search(obj, queries, 10, None, setting)
        lat = latency(lambda q, s=setting: method.search(obj, q, 10, None, s), queries)
        row = {"method": method.name, "setting": str(setting), "build_s": build_s,
               "recall@10": recall_at(found, truth["none"]), **lat, **info}
        rows.append(row)
        log(f"  {method.name} {setting}: recall@10 {row['recall@10']:.3f} p50 {lat['p50_ms']:.2f} ms "
            f"p95 {lat['p95_ms']:.2f} ms (build {build_s:.0f} s)")
        if chosen is None and row["recall@10"] >= TARGET_RECALL:
            chosen = row
    chosen = chosen or rows[-1]
    chosen["chosen"] = True
    setting = method.settings[[r["setting"] for r in rows].index(chosen["setting"])]
    for name, mask in masks.items():
        found = method.search(obj, queries, 10, mask, setting)
        chosen[f"recall {name}"] = recall_at(found, truth[name])
        chosen[f"count {name}"] = int((found >= 0).sum(axis=1).min()) if found.size else 0
        lat = latency(lambda q, m=mask: method.search(obj, q, 10, m, setting), queries[:50])
        chosen[f"p50 {name}"] = lat["p50_ms"]
        log(f"  {method.name} {setting}, {name}: recall@10 {chosen[f'recall {name}']:.3f}, "
            f"{chosen[f'count {name}']} results, p50 {lat['p50_ms']:.2f} ms")
    if "ram_mb" in info:  # served memory-mapped: what it holds in RAM, plus the mapped pages queries touched
        chosen["mapped_mb"] = mapped_mb(info["dir"])
        chosen["resident_mb"] = info["ram_mb"] + chosen["mapped_mb"]
    else:
        chosen["resident_mb"] = max(info.get("index_mb", 0.0), rss_mb() - before)
    if hasattr(obj, "backend"):
        method.search(obj, queries[:1], 10, None, setting)  # leaves the chosen setting in its config
        chosen["regions_p50_ms"] = region_p50(obj, queries)
        log(f"  {method.name} {setting}: a region query (17 vectors at once) p50 {chosen['regions_p50_ms']:.1f} ms")
    discard(obj, info)
    return rows


# ----------------------------------------------------------------------------------------------
# The methods.

def _ann_search(index: Any, q: np.ndarray, k: int, mask: np.ndarray | None, setting: Any) -> np.ndarray:
    return index.search(q, k, mask=mask, ef_search=setting).rows


def hnsw_method(full: bool, max_rows: int) -> Method:
    """FAISS HNSW over the float16 vectors (``full``), or over 128-d PCA projections re-ranked on them."""
    from imgsim.index.hnsw import AnnConfig, AnnIndex

    if full:
        config = AnnConfig(M=16, ef_construction=64, dtype="float16", exact_below=20_000, threads=2)
        name, settings = "HNSW full-dim M16 efC64 fp16", [32, 64, 128]
    else:
        config = AnnConfig(M=16, ef_construction=48, dtype="float16", graph_dims=128, rerank=10,
                           exact_below=20_000, threads=2)
        name, settings = "HNSW PCA-128 M16 efC48, re-ranked fp16", [64, 128, 256]

    def build(x: np.ndarray) -> tuple[Any, dict[str, Any]]:
        index = AnnIndex.build(x, "cosine", config)
        return index, {"index_mb": index.nbytes / 2**20}

    return Method(name, build, _ann_search, settings, max_rows)


def ivfpq_method(rerank: str, labels: np.ndarray, shared: dict[str, Any]) -> Method:
    """FAISS IVF-PQ (imgsim.index.ivfpq), served as a store would be: saved, loaded memory-mapped, refined on the store.

    ``shared`` carries the sq8 build to the float16 variant, which swaps the re-rank vectors only
    (same lists and codebooks; its build time is the sq8 one plus filling float16 vectors).
    """
    import pandas as pd

    from imgsim.index.hnsw_config import AnnDtype, flat_index
    from imgsim.index.ivfpq import IvfPqBackend, IvfPqConfig, IvfPqIndex

    config = IvfPqConfig(rerank_dtype=rerank, exact_below=4_096, threads=2)

    def build(x: np.ndarray) -> tuple[Any, dict[str, Any]]:
        import faiss

        t = time.perf_counter()
        if rerank == "sq8" or "index" not in shared:
            index = IvfPqIndex.build(x, "cosine", dataclasses.replace(config, rerank_dtype="sq8"))
            shared["index"], shared["build_s"] = index, time.perf_counter() - t
        index = shared["index"]
        if rerank != "sq8":
            t = time.perf_counter()
            vectors = flat_index(x.shape[1], AnnDtype(rerank), faiss.METRIC_INNER_PRODUCT)
            for start in range(0, len(x), 32_768):
                chunk = np.asarray(x[start:start + 32_768], dtype=np.float32)
                vectors.add(chunk / np.linalg.norm(chunk, axis=1, keepdims=True))
            index._vectors, index.config = vectors, config
            shared["build_s"] += time.perf_counter() - t
        build_s = shared["build_s"]
        work = Path(tempfile.mkdtemp(prefix="ivfpq-bench-"))
        index.save(work / "index")
        if rerank != "sq8":
            del shared["index"]
        del index
        # Served as a catalogue serves it: the re-rank vectors memory-mapped, and the best
        # candidates scored last on the store's matrix (here a memory-mapped float16 copy of x).
        store = np.lib.format.open_memmap(work / "store.npy", mode="w+", dtype=x.dtype, shape=x.shape)
        for start in range(0, len(x), 65_536):
            store[start:start + 65_536] = x[start:start + 65_536]
        store.flush()
        del store
        # Unchecked (a catalogue checks the store's fingerprint on opening, reading all of it once
        # into the page cache): here the mapped pages counted are the ones queries touch.
        loaded = IvfPqIndex.load(work / "index", None)
        loaded.exact = np.load(work / "store.npy", mmap_mode="r")
        ram_mb = (loaded.nbytes - loaded._vectors.ntotal * loaded._vectors.sa_code_size()) / 2**20
        backend = IvfPqBackend(loaded, pd.DataFrame({"category": labels}))
        loaded.backend = backend
        return loaded, {"build_s": build_s, "index_mb": loaded.nbytes / 2**20, "ram_mb": ram_mb, "dir": str(work)}

    def search(index: Any, q: np.ndarray, k: int, mask: np.ndarray | None, setting: Any) -> np.ndarray:
        nprobe, shortlist = setting
        index.config = dataclasses.replace(index.config, nprobe=nprobe, shortlist=shortlist)
        return index.search(q, k, mask=mask).rows

    settings = [(8, 128), (16, 128), (16, 256), (32, 256)]
    return Method(f"IVF-PQ (PQ64) + re-rank on {rerank} (memory-mapped)", build, search, settings)


def region_p50(index: Any, queries: np.ndarray, reps: int = 20) -> float:
    """p50 (ms) of one region query (17 vectors at once) through the backend's ``search_regions``."""
    vectors = queries[:17]
    index.backend.search_regions(vectors, 10)
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        index.backend.search_regions(vectors, 10)
        out.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(out, 50))


def milvus_method(labels: np.ndarray, max_rows: int) -> Method:
    """Milvus Lite (embedded) with imgsim's collection settings (HNSW M16, efConstruction 200)."""
    from imgsim.index.milvus import DEFAULT_EF, KIND, MilvusBackend

    def build(x: np.ndarray) -> tuple[Any, dict[str, Any]]:
        work = Path(tempfile.mkdtemp(prefix="milvus-bench-"))
        uri = str(work / "bench.db")
        manifest = {"kind": KIND, "format_version": 1, "dim": x.shape[1], "metric": "cosine",
                    "index": {"type": "HNSW", "M": 16, "efConstruction": 200, "ef": DEFAULT_EF}}
        with MilvusBackend(uri) as backend:
            backend.export_arrays("bench", [f"r{i}" for i in range(len(x))], np.asarray(x, np.float32),
                                  [str(c) for c in labels[:len(x)]], [""] * len(x), manifest=manifest)
        backend = MilvusBackend(uri)
        backend.search("bench", np.asarray(x[:1], np.float32), 10)  # loads the collection, builds the index
        return backend, {"dir": str(work)}

    def search(backend: Any, q: np.ndarray, k: int, mask: np.ndarray | None, setting: Any) -> np.ndarray:
        backend.ef = setting
        category = None if mask is None else str(labels[np.flatnonzero(mask)[0]])
        hits = backend.search("bench", q, k, category=category)
        rows = np.full((len(q), k), -1, dtype=np.int64)
        for i, found in enumerate(hits):
            rows[i, :len(found)] = [int(key[1:]) for key, _ in found]
        return rows

    return Method("Milvus Lite HNSW M16 efC200", build, search, [64, 128], max_rows)
