"""No good match: how often each approach's calibrated line flags photos of things the catalogue
does not sell, and how often it wrongly flags phone photos of its own products.

Builds (once, cached under --work) a catalogue from the seeded myntra_eval subset of
``benchmarks/phone_photos.py``; the build fits each approach's line (:mod:`imgsim.calibration`,
seed 0). Then, with another seed (photos the line never saw):

- own: simulated phone photos (:func:`imgsim.phonesim.simulate_photo`, standard tier) of random
  catalogue items, from their full-size source images;
- unrelated: Tux Paint's stamps (animals, food, vehicles, ...; not its clothes, nor household
  things a fashion shop may sell) posed in a scene, when ``/usr/share/tuxpaint/stamps`` is
  installed; and the synthetic kinds of :func:`imgsim.calibration.unrelated_photo` (bare scenes,
  sensor noise, scikit-image's sample photos posed in a scene).

Each photo is searched as a shopper's is (:meth:`imgsim.engine.Engine.search`). Prints, per
approach, the share flagged of each kind against the targets (>= 80% of unrelated photos flagged,
<= 10% of own products'):

    .venv/bin/python benchmarks/good_match.py --items 600 -n 100

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
from phone_photos import DEFAULT_DATA, LABEL, subset  # noqa: E402 (the same seeded subset)

from imgsim.build import BuildOptions, build  # noqa: E402
from imgsim.calibration import PHOTOS, unrelated_photo  # noqa: E402
from imgsim.engine import Engine  # noqa: E402
from imgsim.ingest.images import decode_image  # noqa: E402
from imgsim.phonesim import product_mask, simulate_photo  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")
#: Stamp folders a fashion catalogue could sell (or nearly): left out of the unrelated photos.
SOLD_LIKE = ("clothes", "household")
SIZE = (1024, 768)
SYNTHETIC = ("scene", "noise", "sample photo")


def stamp_paths(rng: np.random.Generator, n: int) -> list[Path]:
    """``n`` random Tux Paint stamps (PNG), none from :data:`SOLD_LIKE`; empty when not installed."""
    if not STAMPS.is_dir():
        return []
    paths = sorted(p for p in STAMPS.rglob("*.png")
                   if p.relative_to(STAMPS).parts[0] not in SOLD_LIKE and "_mirror" not in p.name)
    return [paths[i] for i in rng.choice(len(paths), min(n, len(paths)), replace=False)]


def stamp_photo(path: Path, rng: np.random.Generator) -> np.ndarray:
    """A stamp (its alpha as the cut-out) posed in a scene, as a phone photo."""
    im = Image.open(path).convert("RGBA")
    im.thumbnail((512, 512))
    return simulate_photo(np.asarray(im), rng, size=SIZE).rgb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled image folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgsim-goodmatch-bench"),
                        help="cache for the catalogue (never committed)")
    parser.add_argument("--items", type=int, default=600, help="catalogue size")
    parser.add_argument("-n", "--photos", type=int, default=100, help="photos of each side (own, unrelated)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out photos")
    parser.add_argument("--approaches", default="pretrained,tuned", help="comma-separated approaches to build")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "labels.csv").exists():
        print(f"skipped: {args.data} is absent (the labelled myntra_eval folder)")
        return 0
    folder = subset(args.data, args.items, 0, args.work)
    names = tuple(args.approaches.split(","))
    started = time.perf_counter()
    catalog = build(str(folder), args.work / f"catalog-{args.items}", BuildOptions(
        approaches=names, labels=str(folder / "labels.csv"), label_column=LABEL),
        log=lambda line: print(line, file=sys.stderr))
    print(f"built (with calibration where missing) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    engine = Engine(catalog)
    rng = np.random.default_rng(args.seed)
    sources = catalog.ok["source"].tolist()
    photos: list[tuple[str, np.ndarray]] = []
    for row in rng.choice(len(sources), args.photos, replace=False):
        product = decode_image(sources[row])
        rgba = np.dstack([product, (product_mask(product) * 255).astype(np.uint8)])
        photos.append(("own", simulate_photo(rgba, rng, size=SIZE).rgb))
    stamps = stamp_paths(rng, args.photos // 2)
    photos += [("stamp", stamp_photo(p, rng)) for p in stamps]
    photos += [(SYNTHETIC[i % 3], unrelated_photo(rng, i, SIZE)) for i in range(args.photos - len(stamps))]
    report: dict = {"catalog_items": len(sources), "calibration_photos": PHOTOS, "photos": {}, "approaches": {}}
    for kind, _ in photos:
        report["photos"][kind] = report["photos"].get(kind, 0) + 1
    for approach in engine.approaches():
        flags: dict[str, list[bool]] = {}
        t0 = time.perf_counter()
        verdicts = [(kind, engine.search(rgb, approach, 1).no_good_match) for kind, rgb in photos]
        if any(v is None for _, v in verdicts):
            report["approaches"][approach] = {"note": "no line"}
            continue
        for kind, flagged in verdicts:
            flags.setdefault(kind, []).append(bool(flagged))
        unrelated = [f for kind, fs in flags.items() if kind != "own" for f in fs]
        line = engine.search(photos[0][1], approach, 1).match_threshold
        report["approaches"][approach] = {
            "line": line, "own_flagged": round(float(np.mean(flags["own"])), 3),
            "unrelated_flagged": round(float(np.mean(unrelated)), 3),
            "by_kind": {kind: round(float(np.mean(fs)), 3) for kind, fs in flags.items()},
            "seconds_per_photo": round((time.perf_counter() - t0) / len(photos), 3)}
    print(f"{report['catalog_items']} items; held-out photos {report['photos']}")
    print(f"{'approach':<12} {'line':>8} {'own flagged (<=10%)':>20} {'unrelated flagged (>=80%)':>26}  by kind")
    for approach, numbers in report["approaches"].items():
        if "note" in numbers:
            print(f"{approach:<12} {numbers['note']}")
            continue
        print(f"{approach:<12} {numbers['line']:>8.4f} {numbers['own_flagged']:>20.1%} "
              f"{numbers['unrelated_flagged']:>26.1%}  {json.dumps(numbers['by_kind'])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
