"""Phone photos of catalogue products: does a shopper's photo find the product?

Builds (once, cached under --work) a catalogue from a stratified, seeded subset of a labelled
folder (default ``../shared/data/myntra_eval``, articleType as the label) with the pretrained
store, generates simulated 12 MP phone photos of catalogue items with
:mod:`imgsim.phonesim` (a standard and a hard tier; half stored sideways with an EXIF
orientation; JPEG bytes in a temp dir, never committed), and reports for every query mode:
instance recall@1 and @10 of the photographed item, label precision@10 and p50/p95 latency
from JPEG bytes to results. It also reports the catalogue photos' own leave-one-out
precision@10 with each mode, so a gain on phone photos is never bought with a loss there.

    .venv/bin/python benchmarks/phone_photos.py --json bench-out/phone.json \\
        --figure docs/phone_photos.png

Every approach (``--approaches``: pretrained, tuned, autoencoder) is run through
:meth:`imgsim.engine.Engine.search` as the app runs it, with region search on and off, on both
tiers, next to the targets of issue #23 with the gap stated where one is missed; its
catalogue-photo precision@10 comes from :meth:`imgsim.engine.Engine.evaluate` (tuned scored with
each query's label held out of its fit). Tuned is fitted with every photographed item held out
(none of their simulated photos is in its fit), on the simulator's training scenes; the benchmark's
photos use its evaluation scenes.

Query modes of the pretrained space alone (``--modes``, none by default):
``whole-pad``/``whole-squash``/``whole-crop`` (the whole photo made square by white padding,
squashing or a centre crop), ``regions`` (:mod:`imgsim.approaches.regions` with its default
config) and variants of it. Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgsim.approaches.features import load_extractor
from imgsim.approaches.regions import RegionConfig, RegionEmbedder, search_regions
from imgsim.build import BuildOptions, build
from imgsim.evaluate import evaluate_embeddings
from imgsim.index.exact import Index
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.images import decode_image, to_square
from imgsim.phonesim import product_mask, simulate_photo
from imgsim.storage.stores import Store, store_path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra_eval"
LABEL = "articleType"
APPROACHES = ("pretrained", "tuned", "autoencoder")
#: Issue #23's targets (set on its hidden photos), as (metric, tier) -> floor; ``pretrained`` stands
#: for the best approach. ``None`` tiers are the catalogue photos. tuned's top 10 floor is also
#: at least pretrained's minus 0.02 (added at run time).
TARGETS = {
    "pretrained": {("recall@1", "standard"): 0.85, ("recall@10", "standard"): 0.95,
                   ("recall@1", "hard"): 0.65, ("recall@10", "hard"): 0.85},
    "tuned": {("recall@10", "standard"): 0.90, ("label_p@10", "standard"): 0.80},
    "autoencoder": {("recall@10", "standard"): 0.35, ("label_p@10", "standard"): 0.55},
}
P50_TARGET_MS = 250
EXIF_ORIENTATION = 0x0112
# Orientation tag -> the rotation that turns upright pixels into the stored ones (its inverse
# is what a viewer, and decode_image, applies).
STORED_ROTATION = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


@dataclasses.dataclass(frozen=True)
class Photo:
    """One generated query: where its bytes are, which catalogue item (and row) it shows, its tier."""

    path: str
    row: int
    tier: str
    orientation: int
    box: tuple[int, int, int, int]
    item_id: str


def subset(data: Path, n_items: int, seed: int, work: Path) -> Path:
    """A folder with a copy of a stratified (by articleType) seeded subset, with its labels CSV."""
    folder = work / f"subset-{n_items}-{seed}"
    if (folder / "labels.csv").exists():
        return folder
    table = pd.read_csv(data / "labels.csv", dtype=str, keep_default_na=False)
    frac = min(1.0, n_items / len(table))
    rng = np.random.default_rng(seed)
    picks = []
    for _, group in table.groupby(LABEL, sort=True):
        want = len(group) * frac
        take = int(want) + (rng.random() < want - int(want))
        take = min(len(group), max(take, 2 if len(group) >= 2 else 1))
        picks.append(group.iloc[np.sort(rng.choice(len(group), take, replace=False))])
    chosen = pd.concat(picks).sort_values("path")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    for rel in chosen["path"]:
        shutil.copyfile(data / rel, tmp / rel)
    chosen.to_csv(tmp / "labels.csv", index=False)
    os.replace(tmp, folder)
    return folder


def make_photos(catalog: Catalog, labels: np.ndarray, n: int, seed: int, out: Path,
                size: tuple[int, int]) -> list[Photo]:
    """``n`` standard and ``n`` hard-tier photos of random catalogue items, as JPEG files."""
    listing = out / "photos.json"
    ids = catalog.ok["id"].astype(str).tolist()
    if listing.exists():  # rows are looked up again: a rebuilt catalogue may order items anew
        row_of = {item_id: row for row, item_id in enumerate(ids)}
        return [Photo(**{**p, "box": tuple(p["box"]), "row": row_of[p["item_id"]]})
                for p in json.loads(listing.read_text())]
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = catalog.ok["source"].tolist()
    photos = []
    for tier in ("standard", "hard"):
        rows = rng.choice(len(sources), n, replace=False)
        for i, row in enumerate(rows):
            product = decode_image(sources[row])
            other = None
            if tier == "hard":  # a second catalogue product, of another kind, in the scene
                candidates = np.flatnonzero(labels != labels[row])
                other = decode_image(sources[rng.choice(candidates)])
            portrait = rng.random() < 0.3
            shot = simulate_photo(np.dstack([product, (product_mask(product) * 255).astype(np.uint8)]),
                                  rng, size=size[::-1] if portrait else size, hard=tier == "hard",
                                  distractor=other, split="eval")
            im = Image.fromarray(shot.rgb)
            orientation = int(rng.choice([6, 8, 3])) if i % 2 == 1 else 1
            exif = Image.Exif()
            if orientation != 1:
                im = im.transpose(STORED_ROTATION[orientation])
                exif[EXIF_ORIENTATION] = orientation
            path = out / f"{tier}-{i:03d}.jpg"
            im.save(path, format="JPEG", quality=int(rng.integers(82, 95)), exif=exif.tobytes())
            upright = decode_image(path, max_side=64).shape
            if (upright[1] > upright[0]) != (shot.rgb.shape[1] > shot.rgb.shape[0]):
                raise RuntimeError(f"{path}: the EXIF orientation did not turn the photo upright")
            photos.append(Photo(str(path), int(row), tier, orientation, shot.box, ids[row]))
    listing.write_text(json.dumps([dataclasses.asdict(p) for p in photos]))
    return photos


def whole_query(extractor, mode: str):
    """Today's query: decode, make the whole photo square (pad, squash or crop), embed."""

    def embed(data: bytes) -> np.ndarray:
        rgb = decode_image(data, max_side=2 * extractor.image_size)
        size = extractor.image_size
        if mode == "pad":
            square = to_square(rgb, size)
        elif mode == "squash":
            square = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))
        else:
            h, w = rgb.shape[:2]
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            square = to_square(rgb[top:top + s, left:left + s], size)
        return extractor.embed(square[None]), None

    return embed


def region_query(embedder: RegionEmbedder):
    """Region search: decode at the embedder's size, one forward pass, R region vectors."""

    def embed(data: bytes) -> np.ndarray:
        rgb = decode_image(data, max_side=embedder.decode_side)
        query = embedder.embed(rgb)
        return query.vectors, query.kinds

    return embed


def run_queries(embed, fusion: str, index: Index, photos: list[Photo], labels: np.ndarray,
                k: int = 10) -> dict:
    """Metrics and latency of one query mode over ``photos`` (bytes read before the clock)."""
    blobs = [Path(p.path).read_bytes() for p in photos]
    embed(blobs[0])  # warm: the first call traces the model
    results, seconds = [], []
    for data in blobs:
        started = time.perf_counter()
        vectors, kinds = embed(data)
        hits = search_regions(index, vectors, k, fusion=fusion, kinds=kinds)
        seconds.append(time.perf_counter() - started)
        results.append(hits.rows[0])
    out: dict = {}
    for tier in ("standard", "hard", "all"):
        chosen = [i for i, p in enumerate(photos) if tier in ("all", p.tier)]
        if not chosen:
            continue
        r1 = np.mean([results[i][0] == photos[i].row for i in chosen])
        r10 = np.mean([photos[i].row in results[i][:k] for i in chosen])
        p10 = np.mean([np.mean(labels[results[i][:k]] == labels[photos[i].row]) for i in chosen])
        out[tier] = {"recall@1": float(r1), f"recall@{k}": float(r10), f"label_p@{k}": float(p10),
                     "n": len(chosen)}
    out["latency_p50_ms"] = float(np.percentile(seconds, 50) * 1000)
    out["latency_p95_ms"] = float(np.percentile(seconds, 95) * 1000)
    return out


def catalog_precision(embedder: RegionEmbedder | None, fusion: str, index: Index,
                      embeddings: np.ndarray, catalog: Catalog, labels: np.ndarray,
                      n_queries: int, seed: int, k: int = 10) -> float:
    """Leave-one-out label precision@k of catalogue photos as queries (a seeded sample)."""
    if embedder is None:
        return float(evaluate_embeddings(embeddings, labels, k)[f"precision@{k}"])
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(labels), min(n_queries, len(labels)), replace=False))
    sources = catalog.ok["source"].tolist()
    precision = []
    for row in rows:
        query = embedder.embed(decode_image(sources[row], max_side=embedder.decode_side))
        hits = search_regions(index, query.vectors, k, exclude=row, fusion=fusion, kinds=query.kinds)
        precision.append(np.mean(labels[hits.rows[0]] == labels[row]))
    return float(np.mean(precision))


def figure(path: Path, photos: list[Photo], catalog: Catalog, embed, fusion: str, index: Index,
           n: int = 4, k: int = 5) -> None:
    """A PNG: a few photos (both tiers) with their top-k results, the right item framed green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thumbs = catalog.thumb_paths()
    chosen = [p for p in photos if p.tier == "standard"][: n // 2] + [p for p in photos if p.tier == "hard"][: n - n // 2]
    fig, axes = plt.subplots(len(chosen), k + 1, figsize=(2.2 * (k + 1), 2.2 * len(chosen)))
    for r, photo in enumerate(chosen):
        data = Path(photo.path).read_bytes()
        vectors, kinds = embed(data)
        rows = search_regions(index, vectors, k, fusion=fusion, kinds=kinds).rows[0]
        axes[r, 0].imshow(decode_image(data, max_side=512))
        axes[r, 0].set_title(f"{photo.tier} photo", fontsize=9)
        for c, row in enumerate(rows, start=1):
            axes[r, c].imshow(decode_image(thumbs[row]))
            if row == photo.row:
                for spine in axes[r, c].spines.values():
                    spine.set_edgecolor("green")
                    spine.set_linewidth(4)
            axes[r, c].set_title(f"#{c}" + (" (it)" if row == photo.row else ""), fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled image folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgsim-phone-bench"),
                        help="cache for the catalogue and the photos (never committed)")
    parser.add_argument("--items", type=int, default=1200, help="catalogue size")
    parser.add_argument("-n", "--photos", type=int, default=150, help="photos per tier")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="4000x3000", help="photo width x height (12 MP default)")
    parser.add_argument("--approaches", nargs="*", default=list(APPROACHES),
                        help="approaches run through the engine, regions on and off")
    parser.add_argument("--modes", nargs="*", default=[],
                        help="query modes: whole-pad, whole-squash, whole-crop, regions, "
                             "regions:<field>=<value>,... (RegionConfig variants)")
    parser.add_argument("--catalog-queries", type=int, default=300,
                        help="catalogue photos queried per region mode for the clean precision@10")
    parser.add_argument("--prepare-only", action="store_true", help="build and generate, then stop")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--figure", type=Path, help="write a PNG of photos and their top results")
    return parser.parse_args(argv)


def region_config(mode: str) -> RegionConfig:
    """``regions`` or ``regions:input_size=448,fusion=max`` -> the RegionConfig it names."""
    config = RegionConfig()
    if ":" not in mode:
        return config
    changes = {}
    for part in mode.split(":", 1)[1].split(","):
        key, value = part.split("=", 1)
        current = getattr(config, key)
        if isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):  # an empty value is an empty tuple (crop_boxes=)
            changes[key] = tuple((type(current[0]) if current else str)(v) for v in value.split("/") if v)
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(config, **changes)


def prepare(args: argparse.Namespace) -> tuple[Catalog, np.ndarray, list[Photo]]:
    """The benchmark's catalogue (built once under ``--work``), its labels and its photos."""
    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = subset(args.data, args.items, args.seed, args.work)
    catalog_dir = args.work / f"catalog-{args.items}-{args.seed}"
    catalog = build(str(folder), catalog_dir, BuildOptions(
        approaches=tuple(a for a in ("pretrained", "autoencoder") if a == "pretrained" or a in args.approaches),
        labels=str(folder / "labels.csv"), label_column=LABEL),
        log=lambda line: print(line, file=sys.stderr))
    labels = catalog.ok["label"].to_numpy().astype(str)
    photos = make_photos(catalog, labels, args.photos, args.seed,
                         args.work / f"photos-{args.items}-{args.seed}-{args.photos}-{width}x{height}",
                         (width, height))
    return catalog, labels, photos


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "labels.csv").exists():
        print(f"skipped: {args.data} is absent (the labelled myntra_eval folder)")
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    catalog, labels, photos = prepare(args)
    print(f"catalogue {len(labels)} items, {len(photos)} photos in {photos[0].path.rsplit('/', 1)[0]}",
          file=sys.stderr)
    if "tuned" in args.approaches:
        fit_tuned(catalog, {p.item_id for p in photos})
    if args.prepare_only:
        return 0
    report: dict = {"catalog_items": len(labels), "photos_per_tier": args.photos, "size": [width, height],
                    "loadavg_start": loadavg(), "approaches": {}, "modes": {}}
    if args.approaches:
        report["approaches"] = run_approaches(catalog, args.approaches, photos, labels)
        print(approach_table(report))
    if args.modes:
        report["modes"] = run_modes(args, catalog, photos, labels)
        print(table(report))
    report["loadavg_end"] = loadavg()
    print(f"load average (1, 5, 15 min): {' '.join(report['loadavg_start'] or [])} at the start, "
          f"{' '.join(report['loadavg_end'] or [])} at the end")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def loadavg() -> list[str] | None:
    """The machine's load averages (1, 5, 15 minutes), where /proc says."""
    path = Path("/proc/loadavg")
    return path.read_text().split()[:3] if path.exists() else None


def fit_tuned(catalog: Catalog, holdout: set[str]) -> None:
    """Fits tuned with the photographed items held out, unless a head with that holdout is current."""
    from imgsim.approaches.tuned import TunedSettings
    from imgsim.build import retrain
    from imgsim.storage.artifacts import sha256_text

    manifest = catalog.root / "models" / "tuned" / "manifest.json"
    wanted = sha256_text(*sorted(holdout))
    if manifest.exists() and json.loads(manifest.read_text()).get("holdout_fingerprint") == wanted:
        return
    retrain(catalog, "tuned", BuildOptions(settings={"tuned": TunedSettings(holdout=frozenset(holdout))}),
            log=lambda line: print(line, file=sys.stderr))


def run_approaches(catalog: Catalog, names: list[str], photos: list[Photo], labels: np.ndarray,
                   k: int = 10) -> dict:
    """Every approach through the engine, regions on and off: metrics, latency, catalogue P@10."""
    from imgsim.engine import Engine

    engine = Engine.open(catalog.root)
    row_of = {item_id: row for row, item_id in enumerate(engine.items["id"].astype(str))}
    blobs = [Path(p.path).read_bytes() for p in photos]
    evaluation = engine.evaluate("label", k, approaches=[a for a in names if a in engine.approaches()])
    out: dict = {}
    for approach in names:
        if approach not in engine.approaches():
            print(f"{approach}: not built ({engine.unavailable().get(approach)})", file=sys.stderr)
            continue
        out[approach] = {"label": engine.label(approach),
                         "catalog_p@10": evaluation[approach][f"precision@{k}"], "runs": {}}
        for regions in (None, False):  # None: regions where the approach has them (else its own query)
            engine.search(blobs[0], approach, k, regions=regions)  # warm: the first call traces the model
            started, results, seconds = time.perf_counter(), [], []
            for data in blobs:
                result = engine.search(data, approach, k, regions=regions)
                seconds.append(result.seconds)
                results.append([row_of[i] for i in result.ids])
            numbers = score(results, photos, labels, k)
            numbers.update(latency_p50_ms=float(np.percentile(seconds, 50) * 1000),
                           latency_p95_ms=float(np.percentile(seconds, 95) * 1000),
                           seconds=round(time.perf_counter() - started, 1), loadavg=(loadavg() or [None])[0])
            out[approach]["runs"]["regions" if regions is None else "whole photo"] = numbers
            print(f"{approach} regions={regions}: {json.dumps(numbers)}", file=sys.stderr)
    engine.close()
    return out


def score(results: list[list[int]], photos: list[Photo], labels: np.ndarray, k: int = 10) -> dict:
    """Per tier: the product ranked 1st, in the top ``k``, and the label precision@k."""
    out: dict = {}
    for tier in ("standard", "hard"):
        chosen = [i for i, p in enumerate(photos) if p.tier == tier]
        if chosen:
            out[tier] = {
                "recall@1": float(np.mean([results[i][:1] == [photos[i].row] for i in chosen])),
                f"recall@{k}": float(np.mean([photos[i].row in results[i][:k] for i in chosen])),
                f"label_p@{k}": float(np.mean([np.mean(labels[results[i][:k]] == labels[photos[i].row])
                                               for i in chosen])),
                "n": len(chosen)}
    return out


def gaps(report: dict, approach: str, tier: str, numbers: dict) -> str:
    """The targets of ``approach`` on ``tier`` with what each misses by, or "met"."""
    floors = dict(TARGETS.get(approach, {}))
    if approach == "tuned" and "pretrained" in report["approaches"]:
        pretrained = report["approaches"]["pretrained"]["runs"]["regions"]["standard"]["recall@10"]
        floors[("recall@10", "standard")] = max(floors[("recall@10", "standard")], round(pretrained - 0.02, 2))
    names = {"recall@1": "1st", "recall@10": "top 10", "label_p@10": "label P@10"}
    said = []
    for (metric, target_tier), floor in floors.items():
        if target_tier == tier:
            value = numbers[metric]
            said.append(f"{names[metric]} >= {floor:.2f}" + ("" if value >= floor else f" (short by {floor - value:.2f})"))
    return "; ".join(said)


def approach_table(report: dict) -> str:
    """The markdown tables of every approach: phone photos by tier, then catalogue photos."""
    lines = ["| approach | query | tier | ranked 1st | in top 10 | label P@10 | p50 / p95 ms | targets (#23) |",
             "|---|---|---|---|---|---|---|---|"]
    for approach, data in report["approaches"].items():
        for mode, numbers in data["runs"].items():
            for tier in ("standard", "hard"):
                t = numbers[tier]
                target = gaps(report, approach, tier, t) if mode == "regions" else ""
                latency = f"{numbers['latency_p50_ms']:.0f} / {numbers['latency_p95_ms']:.0f}" if tier == "standard" else ""
                if mode == "regions" and tier == "standard" and approach == "pretrained":
                    p50 = numbers["latency_p50_ms"]
                    target += f"; p50 <= {P50_TARGET_MS} ms" + ("" if p50 <= P50_TARGET_MS else
                                                                 f" (over by {p50 - P50_TARGET_MS:.0f} ms)")
                lines.append(f"| {approach} | {mode} | {tier} | {t['recall@1']:.2f} | {t['recall@10']:.2f} | "
                             f"{t['label_p@10']:.2f} | {latency} | {target} |")
    lines += ["", "| approach | catalogue-photo P@10 (leave-one-out, by label) | target |", "|---|---|---|"]
    base = report["approaches"].get("pretrained", {}).get("catalog_p@10")
    for approach, data in report["approaches"].items():
        value, target = data["catalog_p@10"], ""
        if approach == "tuned" and base is not None:
            target = f"above pretrained's {base:.3f}" + ("" if value > base else f" (short by {base - value:.3f})")
        lines.append(f"| {approach} | {value:.3f} | {target} |")
    return "\n".join(lines)


def run_modes(args: argparse.Namespace, catalog: Catalog, photos: list[Photo], labels: np.ndarray) -> dict:
    """The pretrained space's query modes (``--modes``)."""
    store = Store.load(store_path(catalog, "pretrained"), catalog)
    embeddings = np.asarray(store.embeddings, np.float32)
    index = Index(embeddings)
    extractor = load_extractor(store.manifest.get("extractor", "efficientnet_lite0"))
    modes: dict = {}
    whole_p10 = catalog_precision(None, "max", index, embeddings, catalog, labels, 0, args.seed)
    figure_mode = None
    for mode in args.modes:
        if mode.startswith("whole-"):
            embed, fusion, embedder = whole_query(extractor, mode.split("-", 1)[1]), "max", None
        else:
            config = region_config(mode)
            embedder = RegionEmbedder(store.manifest.get("extractor", "efficientnet_lite0"), config)
            embed, fusion = region_query(embedder), config.fusion
            figure_mode = figure_mode or (embed, fusion)
        started = time.perf_counter()
        numbers = run_queries(embed, fusion, index, photos, labels)
        numbers["catalog_p@10"] = whole_p10 if embedder is None else catalog_precision(
            embedder, fusion, index, embeddings, catalog, labels, args.catalog_queries, args.seed)
        numbers["seconds"] = round(time.perf_counter() - started, 1)
        numbers["loadavg"] = (loadavg() or [None])[0]
        modes[mode] = numbers
        print(f"{mode}: {json.dumps(numbers)}", file=sys.stderr)
    if args.figure and figure_mode is not None:
        figure(args.figure, photos, catalog, figure_mode[0], figure_mode[1], index)
    return modes


def table(report: dict) -> str:
    """The markdown table of a report."""
    lines = ["| mode | tier | ranked 1st | in top 10 | label P@10 | catalogue-photo P@10 | p50 ms | p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, numbers in report["modes"].items():
        for tier in ("standard", "hard"):
            if tier not in numbers:
                continue
            t = numbers[tier]
            lines.append(f"| {mode} | {tier} | {t['recall@1']:.2f} | {t['recall@10']:.2f} | {t['label_p@10']:.2f} | "
                         f"{numbers['catalog_p@10']:.3f} | {numbers['latency_p50_ms']:.0f} | {numbers['latency_p95_ms']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
