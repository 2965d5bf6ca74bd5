"""Automatic product boxes against the simulator's true boxes, and pad against squash on 3:4 shots.

Box IoU (the default): on the phone photos of ``benchmarks/phone_photos.py`` (the same seeded
catalogue subset and photos, generated there and cached under ``--work``), the box IoU with the
product's true box (mean, and the share at IoU >= 0.5) per tier, for the earlier single boxes
(:func:`imgsim.approaches.regions.product_box`), each proposal spec alone, the query's automatic
box (the first proposal), the best of the proposals, and a refinement pass (the photo cropped
again around the first box, with a margin, and boxed at the same resolution as the first pass).

``--aspect``: catalogue photos are 3:4 in real life, but myntra_eval's are squashed to 224x224.
Its items are un-squashed to 3:4 (300x400) studio shots, then embedded made square both ways
(padded with white, as :func:`imgsim.ingest.images.to_square` does, or squashed back), and each
way's leave-one-out articleType precision@10 is reported (the item itself excluded), with the
paired difference and its standard error over the queries.

    PYTHONPATH=. .venv/bin/python benchmarks/boxes.py --data ../shared/data/myntra_eval
    PYTHONPATH=. .venv/bin/python benchmarks/boxes.py --aspect --data ../shared/data/myntra_eval

Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import phone_photos  # noqa: E402
from phone_photos import LABEL  # noqa: E402

from imgsim.approaches import boxes  # noqa: E402
from imgsim.approaches.regions import RegionConfig, RegionEmbedder, product_box  # noqa: E402
from imgsim.evaluate import evaluate_embeddings  # noqa: E402
from imgsim.ingest.images import decode_image, to_square  # noqa: E402


def true_box(photo, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """The photo's true box scaled to a decoded (upright) size ``shape``."""
    with Image.open(photo.path) as im:
        width, height = im.size
    if photo.orientation in (6, 8):
        width, height = height, width
    s = shape[1] / width
    return tuple(v * s for v in photo.box)


def refined(embedder: RegionEmbedder, rgb: np.ndarray, box, spec: str, margin: float):
    """The box found again in a crop of ``rgb`` around ``box`` grown by ``margin`` of its sides."""
    h, w = rgb.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    x0, y0 = max(0, int(box[0] - margin * bw)), max(0, int(box[1] - margin * bh))
    x1, y1 = min(w, int(box[2] + margin * bw)), min(h, int(box[3] + margin * bh))
    crop = rgb[y0:y1, x0:x1]
    resized, fmap = embedder.photo_map(crop)
    (bx0, by0, bx1, by1), _ = boxes.propose(fmap, crop.shape[:2], (spec,), 1, resized)[0]
    return (bx0 + x0, by0 + y0, bx1 + x0, by1 + y0)


def measure_iou(args: argparse.Namespace) -> dict:
    """Box IoU of every method over the benchmark's photos, per tier."""
    _, _, photos = phone_photos.prepare(args)
    config = RegionConfig()
    embedder = RegionEmbedder("efficientnet_lite0", config)
    specs = tuple(dict.fromkeys(config.proposals + tuple(args.extra_specs)))
    ious: dict[str, dict[str, list[float]]] = {}
    counts, started = [], time.perf_counter()
    for photo in photos:
        rgb = decode_image(photo.path, max_side=embedder.decode_side)
        truth = true_box(photo, rgb.shape[:2])
        resized, fmap = embedder.photo_map(rgb)
        shape = rgb.shape[:2]
        found = {"old contrast box": product_box(fmap, shape, "contrast"),
                 "old energy box": product_box(fmap, shape, "energy")}
        for spec in specs:
            found[f"proposal {spec}"] = boxes.propose(fmap, shape, (spec,), 1, resized)[0][0]
        proposals = boxes.propose(fmap, shape, config.proposals, config.max_crops - 1, resized)
        counts.append(len(proposals))
        found["auto box (first proposal)"] = proposals[0][0]
        for margin in args.refine_margins:
            found[f"refined, margin {margin}"] = refined(embedder, rgb, proposals[0][0], config.proposals[0], margin)
        row = {name: boxes.iou(box, truth) for name, box in found.items()}
        row["best of the proposals"] = max(boxes.iou(box, truth) for box, _ in proposals)
        for name, value in row.items():
            ious.setdefault(name, {"standard": [], "hard": []})[photo.tier].append(value)
    report = {"photos": len(photos), "proposals": list(config.proposals), "max_crops": config.max_crops,
              "mean_proposals_kept": float(np.mean(counts)), "seconds": round(time.perf_counter() - started, 1),
              "loadavg": _loadavg(), "methods": {}}
    for name, tiers in ious.items():
        report["methods"][name] = {tier: {"mean_iou": float(np.mean(v)), "iou>=0.5": float(np.mean(np.array(v) >= 0.5)),
                                          "n": len(v)} for tier, v in tiers.items()}
    lines = ["| box | standard mean IoU | standard IoU >= 0.5 | hard mean IoU | hard IoU >= 0.5 |", "|---|---|---|---|---|"]
    for name, tiers in report["methods"].items():
        s, h = tiers["standard"], tiers["hard"]
        lines.append(f"| {name} | {s['mean_iou']:.3f} | {s['iou>=0.5']:.2f} | {h['mean_iou']:.3f} | {h['iou>=0.5']:.2f} |")
    report["table"] = "\n".join(lines)
    return report


def three_four(square: np.ndarray, height: int = 400) -> np.ndarray:
    """A squashed 224x224 myntra item as the 3:4 (width:height) studio shot it was cut from."""
    return np.asarray(Image.fromarray(square).resize((height * 3 // 4, height), Image.Resampling.BICUBIC))


def measure_aspect(args: argparse.Namespace) -> dict:
    """Leave-one-out label precision@10 of 3:4 studio shots padded or squashed to squares."""
    import pandas as pd

    from imgsim.approaches.features import load_extractor

    table = pd.read_csv(args.data / "labels.csv", dtype=str, keep_default_na=False)
    table = table.sample(n=min(args.aspect_items, len(table)), random_state=args.seed).sort_values("path")
    labels = table[LABEL].to_numpy()
    extractor = load_extractor("efficientnet_lite0")
    size = extractor.image_size
    embeddings: dict[str, list[np.ndarray]] = {"pad": [], "squash": []}
    for start in range(0, len(table), 64):
        shots = [three_four(decode_image(args.data / rel)) for rel in table["path"].iloc[start:start + 64]]
        embeddings["pad"].append(extractor.embed(np.stack([to_square(s, size) for s in shots])))
        embeddings["squash"].append(extractor.embed(np.stack([
            np.asarray(Image.fromarray(s).resize((size, size), Image.Resampling.BICUBIC)) for s in shots])))
    out = {"items": len(table), "seed": args.seed, "loadavg": _loadavg()}
    per_query = {}
    for mode, parts in embeddings.items():
        vectors = np.vstack(parts)
        out[f"{mode}_p@10"] = float(evaluate_embeddings(vectors, labels, 10)["precision@10"])
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, -np.inf)
        top = np.argsort(-scores, axis=1)[:, :10]
        per_query[mode] = (labels[top] == labels[:, None]).mean(axis=1)
    difference = per_query["squash"] - per_query["pad"]
    out["squash_minus_pad"] = float(difference.mean())
    out["paired_standard_error"] = float(difference.std(ddof=1) / np.sqrt(len(difference)))
    return out


def _loadavg() -> list[str] | None:
    path = Path("/proc/loadavg")
    return path.read_text().split()[:3] if path.exists() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The catalogue and photos are phone_photos.py's: its --data, --work, --items, -n, --seed "
               "and --size are taken as it takes them.")
    parser.add_argument("--aspect", action="store_true", help="measure pad against squash instead of boxes")
    parser.add_argument("--extra-specs", nargs="*", default=["contrast@0.7", "energy@0.3"],
                        help="proposal specs measured alone besides the default ones")
    parser.add_argument("--refine-margins", nargs="*", type=float, default=[0.25, 0.5],
                        help="margins of the refinement pass measured (none to skip)")
    parser.add_argument("--aspect-items", type=int, default=2000, help="items of the pad/squash measurement")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    ours, rest = parser.parse_known_args(argv)
    return argparse.Namespace(**{**vars(phone_photos.parse_args(rest)), **vars(ours)})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "labels.csv").exists():
        print(f"skipped: {args.data} is absent (the labelled myntra_eval folder)")
        return 0
    report = measure_aspect(args) if args.aspect else measure_iou(args)
    table = report.pop("table", None)
    print(json.dumps({k: v for k, v in report.items() if k != "methods"}))
    if table:
        print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
