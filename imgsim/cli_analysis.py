"""The command line's analysis subcommands: ``explain`` (why similar) and ``duplicates``.

Registered by :func:`imgsim.cli.make_parser`; errors end as every other command's do (one line,
exit 2), in :func:`imgsim.cli.main`.
"""

from __future__ import annotations

import argparse
import json

from imgsim.arguments import number, resolve_catalog


def cmd_explain(args: argparse.Namespace) -> int:
    from imgsim.analysis.explain import ExplainConfig, explain
    from imgsim.engine import Engine

    engine = Engine.open(resolve_catalog(args.catalog))
    found = explain(engine, args.photo, args.item_id, config=ExplainConfig(input_size=args.size))
    out = found.save(args.out)
    print(f"{out}: {args.item_id} (similarity {found.similarity:.3f}, {found.seconds * 1000:.0f} ms)")
    return 0


def cmd_duplicates(args: argparse.Namespace) -> int:
    from imgsim.analysis.duplicates import find_duplicates
    from imgsim.engine import Engine

    report = find_duplicates(Engine.open(resolve_catalog(args.catalog)), recalibrate=args.recalibrate)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
        return 0
    how = "calibrated now" if report.calibrated else "saved"
    print(f"{len(report.groups)} groups of near-duplicates (threshold {report.threshold.score:.4f}, {how}; "
          f"{report.seconds:.1f} s)")
    for n, group in enumerate(report.items, 1):
        print(f"  {n:>3}. " + "  |  ".join(f"{item['id']} {item['name'][:40]}" for item in group))
    return 0


def add_analysis_parsers(sub) -> None:
    """Adds ``explain`` and ``duplicates`` to the subcommands ``sub``."""
    p = sub.add_parser("explain", help="a heat map of which parts of a photo and an item matched",
                       description="Overlay on the photo and on the item where each matched the other "
                                   "(the pretrained CNN's feature maps), side by side in one PNG.")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("photo", help="the query photo")
    p.add_argument("item_id", metavar="ITEM_ID", help="the result's id (see `query --json`)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--size", type=number(int, 64, 1024, " px"), default=384,
                   help="side the photos are compared at, a multiple of 32 in 64-1024 (default 384)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("duplicates", help="groups of items that are the same photo altered",
                       description="Same bytes, and near-duplicates (re-encoded, resized, cropped, relit, "
                                   "recoloured, rotated, bannered) judged by a threshold calibrated on "
                                   "altered copies of the catalogue's own items; saved in the catalogue.")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("--recalibrate", action="store_true", help="calibrate the threshold again")
    p.add_argument("--json", action="store_true", help='print {"groups": [[{"id", "name"}, ...]], "threshold"}')
    p.set_defaults(func=cmd_duplicates)
