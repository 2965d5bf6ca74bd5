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

Query modes: ``whole-pad``/``whole-squash``/``whole-crop`` (today's query: the whole photo made
square by white padding, squashing or a centre crop), ``regions`` (:mod:`imgsim.approaches.regions` with its
default config) and variants of it. Exits 0 with a message when the data folder is absent.
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
    parser.add_argument("--modes", nargs="+", default=["whole-pad", "whole-squash", "whole-crop", "regions"],
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
        elif isinstance(current, tuple):
            changes[key] = tuple(type(current[0])(v) for v in value.split("/"))
        else:
            changes[key] = type(current)(value)
    return dataclasses.replace(config, **changes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "labels.csv").exists():
        print(f"skipped: {args.data} is absent (the labelled myntra_eval folder)")
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    folder = subset(args.data, args.items, args.seed, args.work)
    catalog_dir = args.work / f"catalog-{args.items}-{args.seed}"
    catalog = build(str(folder), catalog_dir, BuildOptions(
        approaches=("pretrained",), labels=str(folder / "labels.csv"), label_column=LABEL),
        log=lambda line: print(line, file=sys.stderr))
    labels = catalog.ok["label"].to_numpy().astype(str)
    photos = make_photos(catalog, labels, args.photos, args.seed,
                         args.work / f"photos-{args.items}-{args.seed}-{args.photos}-{width}x{height}",
                         (width, height))
    print(f"catalogue {len(labels)} items, {len(photos)} photos in {photos[0].path.rsplit('/', 1)[0]}",
          file=sys.stderr)
    if args.prepare_only:
        return 0
    store = Store.load(store_path(catalog, "pretrained"), catalog)
    embeddings = np.asarray(store.embeddings, np.float32)
    index = Index(embeddings)
    extractor = load_extractor(store.manifest.get("extractor", "efficientnet_lite0"))
    report: dict = {"catalog_items": len(labels), "photos_per_tier": args.photos, "size": [width, height],
                    "loadavg_start": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
                    "modes": {}}
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
        numbers["loadavg"] = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else None
        report["modes"][mode] = numbers
        print(f"{mode}: {json.dumps(numbers)}", file=sys.stderr)
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.figure and figure_mode is not None:
        figure(args.figure, photos, catalog, figure_mode[0], figure_mode[1], index)
    return 0


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
