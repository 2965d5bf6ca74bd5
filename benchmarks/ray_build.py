"""Embedding throughput on a Ray cluster against a local build: images per second.

Copies ``--n`` photos (default 600) of a folder (default ``../shared/data/myntra_eval/images``)
to ``--work`` (default ``/tmp/imgsim-raybench``), ingests them once, then writes the pretrained
store (EfficientNet-Lite0) of that catalogue several ways and prints images/s for each:

- ``local``: :func:`imgsim.storage.stores.build_store` in this process, as ``imgsim build`` does;
- ``ray N``: the same inside :func:`imgsim.distributed.embedding_on_ray` with N actors (``--workers``,
  default ``1,2``), the way ``imgsim build --ray`` embeds;
- ``ray data N`` (with ``--ray-data``): Ray Data's ``map_batches`` over an actor pool of N that
  holds the model, for comparison with the plain actor pool above.

Each row is timed twice: ``end to end`` from the start of the run (actors started, models
loaded, every thumbnail decoded and embedded, the store written) and ``steady`` after a warm-up
batch per worker has loaded the model (what a long build runs at). The load average is printed
with each row: the machine is shared. Start a cluster first (``ray start --head --num-cpus 2``) and
give its address::

    PYTHONPATH=. .venv/bin/python benchmarks/ray_build.py --ray 127.0.0.1:6379 --json /tmp/ray_build.json

Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.approaches.features import load_extractor
from imgsim.distributed import RayConfig, embedding_on_ray, import_ray, model_recipe
from imgsim.ingest.catalog import Catalog, ingest
from imgsim.storage import stores
from imgsim.storage.artifacts import remove_artifact

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra_eval" / "images"


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (other processes share these cores)."""
    return [round(x, 2) for x in os.getloadavg()]


def prepare(data: Path, work: Path, n: int) -> Catalog:
    """``n`` photos of ``data`` copied under ``work`` and ingested (once; reused when there)."""
    src, out = work / "photos", work / "catalog"
    if not (out / "manifest.json").exists():
        shutil.rmtree(work, ignore_errors=True)
        src.mkdir(parents=True)
        for path in sorted(data.glob("*.jpg"))[:n]:
            shutil.copy(path, src / path.name)
        ingest(str(src), out)
    return Catalog.load(out)


def timed_store(catalog: Catalog, extractor: Any, warm: Callable[[], None]) -> dict[str, float]:
    """Seconds to write the pretrained store from scratch: end to end, and after ``warm()``."""
    started = time.perf_counter()
    warm()
    warmed = time.perf_counter()
    remove_artifact(stores.store_path(catalog, "pretrained"))  # a link to its version: rmtree would refuse
    store = stores.build_store(catalog, "pretrained", extractor)
    done = time.perf_counter()
    assert store.manifest["reused_rows"] == 0, store.manifest["reused_rows"]
    return {"end_to_end_s": done - started, "steady_s": done - warmed}


def row(name: str, n: int, seconds: dict[str, float]) -> dict[str, Any]:
    out = {"run": name, "images": n, **{k: round(v, 2) for k, v in seconds.items()},
           "images_per_s": round(n / seconds["steady_s"], 1),
           "images_per_s_end_to_end": round(n / seconds["end_to_end_s"], 1), "loadavg": loadavg()}
    print(f"{name:>12}: {out['images_per_s']:6.1f} images/s steady, {out['images_per_s_end_to_end']:6.1f} end to end "
          f"({seconds['end_to_end_s']:.1f} s for {n}); load average {out['loadavg']}", flush=True)
    return out


def vectors_of(catalog: Catalog) -> np.ndarray:
    return np.asarray(stores.Store.load(stores.store_path(catalog, "pretrained"), catalog).embeddings)


def ray_data_run(catalog: Catalog, extractor: Any, workers: int, batch_size: int = 32) -> tuple[dict, np.ndarray]:
    """Ray Data's map_batches over an actor pool holding the model (the driver reads the bytes)."""
    ray = import_ray()
    recipe = ray.put(model_recipe(extractor))

    class Embed:
        def __init__(self) -> None:
            from imgsim.distributed import rebuild_model

            self.model = rebuild_model(ray.get(recipe))

        def __call__(self, batch: dict) -> dict:
            from imgsim.ingest.images import load_square

            squares = np.stack([load_square(bytes(b), self.model.image_size) for b in batch["image"]])
            return {"row": batch["row"], "vector": self.model.embed(squares)}

    paths = catalog.thumb_paths()
    started = time.perf_counter()
    items = [{"row": i, "image": p.read_bytes()} for i, p in enumerate(paths)]
    out = ray.data.from_items(items).map_batches(Embed, concurrency=workers, batch_size=batch_size,
                                                 num_cpus=1).take_all()
    done = time.perf_counter()
    vectors = np.empty((len(paths), extractor.dim), np.float32)
    for item in out:
        vectors[item["row"]] = item["vector"]
    return {"end_to_end_s": done - started, "steady_s": done - started}, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgsim-raybench"))
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--ray", required=True, help="the cluster's HOST:PORT (or auto)")
    parser.add_argument("--workers", default="1,2", help="comma-separated actor counts")
    parser.add_argument("--ray-data", action="store_true", help="also time Ray Data's map_batches")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"no data folder at {args.data}; nothing to measure")
        return
    catalog = prepare(args.data, args.work, args.n)
    n = len(catalog.ok)
    extractor = load_extractor()
    print(f"{n} images, {extractor.name}, {os.cpu_count()} cores here; load average {loadavg()}", flush=True)
    rows, reference = [], None
    one_batch = [catalog.thumb_paths()[:32]]
    if not args.skip_local:
        rows.append(row("local", n, timed_store(catalog, extractor, lambda: list(stores.embed_chunks(
            extractor, one_batch, 32)))))
        reference = vectors_of(catalog)
    for workers in [int(w) for w in args.workers.split(",")]:
        started = time.perf_counter()
        with embedding_on_ray(RayConfig(args.ray, workers=workers)) as embedder:
            def warm(embedder=embedder, workers=workers) -> None:  # one batch per actor loads its model
                list(embedder(extractor, [catalog.thumb_paths()[:32 * workers]], 32))

            seconds = timed_store(catalog, extractor, warm)
            seconds["end_to_end_s"] = time.perf_counter() - started  # from connecting and starting actors
        rows.append(row(f"ray {workers}", n, seconds))
        if reference is not None:
            print(f"{'':>12}  max |ray - local| = {np.abs(vectors_of(catalog) - reference).max():.2e}")
    if args.ray_data:
        ray = import_ray()
        from imgsim.distributed import resolve_address, runtime_env

        ray.init(address=resolve_address(ray, args.ray), runtime_env=runtime_env(), log_to_driver=False)
        for workers in [int(w) for w in args.workers.split(",")]:
            seconds, vectors = ray_data_run(catalog, extractor, workers)
            rows.append(row(f"ray data {workers}", n, seconds))
            if reference is not None:
                print(f"{'':>12}  max |ray data - local| = {np.abs(vectors - reference).max():.2e}")
        ray.shutdown()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
