"""The command line's searching subcommands: ``query`` (photos, words, filters) and ``evaluate``.

Registered by :func:`imgsim.cli.make_parser`; a user's error ends as every command's does, in
:func:`imgsim.cli.main` (one line on stderr, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from imgsim import approaches as approaches_mod
from imgsim.arguments import EXIT_USER_ERROR, approach_list, parse_box, resolve_catalog


def _result_rows(result) -> list[dict[str, Any]]:
    columns = [c for c in ("rank", "id", "score", "photo_score", "text_score", "name", "category", "price",
                           "matched_box", "thumb_path") if c in result.items]
    scores = ("score", "photo_score", "text_score")
    return [{c: (float(v) if c in scores else list(v) if c == "matched_box" and v is not None else v)
             for c, v in row.items()}
            for row in result.items[columns].to_dict("records")]


def _answer_json(result) -> dict[str, Any]:
    """One approach's answer as ``query --json`` prints it."""
    return {"label": result.label, "metric": result.metric, "regions": result.regions,
            "auto_box": list(result.auto_box) if result.auto_box else None,
            "seconds": round(result.seconds, 4), "no_good_match": result.no_good_match,
            "match_threshold": result.match_threshold, "results": _result_rows(result)}


MAX_QUERY_PHOTOS = 10_000


def _query_photos(paths: list[str]) -> list[Path]:
    """The photos named on the command line; a folder stands for the images directly in it."""
    from imgsim.ingest.sources import IMAGE_SUFFIXES

    photos: list[Path] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_dir():
            photos.extend(sorted(p for p in path.iterdir()
                                 if p.suffix.lower() in IMAGE_SUFFIXES - {".svg"} and p.is_file()))
        else:
            photos.append(path)
        if len(photos) > MAX_QUERY_PHOTOS:
            raise ValueError(f"at most {MAX_QUERY_PHOTOS} photos per run. Received: more than that")
    if not photos:
        raise ValueError(f"no photos found in {', '.join(paths)}")
    return photos


def _requested(engine, chosen: tuple[str, ...] | None) -> tuple[list[str], dict[str, str]]:
    """The requested approaches that can answer, and why each other one cannot.

    Args:
        engine: The open catalogue.
        chosen: Approach names, or None for every approach.

    Returns:
        The usable approaches in the order asked, and ``{name: reason}`` for the unavailable
        ones among those asked (with None, every unavailable approach).

    Raises:
        ValueError: An unknown approach name.
    """
    unavailable = engine.unavailable()
    if chosen is None:
        return engine.approaches(), unavailable
    names = list(dict.fromkeys(approaches_mod.get(name).name for name in chosen))
    return ([a for a in names if a not in unavailable],
            {a: unavailable[a] for a in names if a in unavailable})


def _cannot_answer(command: str, usable: list[str], missing: dict[str, str],
                   chosen: tuple[str, ...] | None) -> bool:
    """True, after one stderr line per unavailable approach, when the run cannot go on.

    It cannot when no approach can answer (say, every store is stale after an interrupted
    ``add``), or when an approach asked for by name is unavailable.
    """
    if usable and not (chosen is not None and missing):
        return False
    for name, why in missing.items():
        print(f"imgsim {command}: error: {name} is unavailable: {why}", file=sys.stderr)
    return True


def cmd_query(args: argparse.Namespace) -> int:
    from imgsim.engine import Engine, decode_query
    from imgsim.index import Filter
    from imgsim.ingest.images import ImageDecodeError
    from imgsim.text import check_words

    box = parse_box(args.box)
    if not args.photos and args.text is None:
        raise ValueError("give at least one PHOTO, or --text WORDS")
    engine = Engine.open(resolve_catalog(args.catalog))
    where = tuple(args.where or ())
    if not args.photos:  # words alone
        result = engine.search_text(args.text, args.k, category=args.category, where=where)
        answers = [{"photo": None, "error": None, "approaches": {result.approach: _answer_json(result)},
                    "unavailable": {}}]
        _print_answers(answers, args.json)
        return 0
    # A bad filter or words without a word: one error before any photo, not one per photo.
    Filter(args.category, where=where).mask(engine.items)
    if args.text is not None:
        check_words(args.text)
    photos = _query_photos(args.photos)
    chosen = approach_list(args.approach)
    approaches, missing = _requested(engine, chosen)
    if _cannot_answer("query", approaches, missing, chosen):  # before any photo is read
        if args.json:
            error = f"unavailable: {', '.join(missing)}"
            print(json.dumps([{"photo": str(photo), "error": error, "approaches": {}, "unavailable": missing}
                              for photo in photos], indent=2))
        return EXIT_USER_ERROR
    for approach in approaches:
        engine.model(approach)
    engine.warm_up()  # so the reported times are the queries', not the first graph trace
    answers, failed = [], 0
    for photo in photos:
        answer: dict[str, Any] = {"photo": str(photo), "error": None, "approaches": {},
                                  "unavailable": missing}
        try:
            rgb = decode_query(photo)
            for approach in approaches:
                result = engine.search(rgb, approach, args.k, category=args.category, box=box,
                                       regions=args.regions, where=where, text=args.text)
                answer["approaches"][approach] = _answer_json(result)
        except (ImageDecodeError, ValueError) as err:
            answer["error"] = str(err)
            print(f"imgsim query: error: {err}", file=sys.stderr)
            failed += 1
        answers.append(answer)
    _print_answers(answers, args.json)
    if failed:
        if len(answers) > 1:
            print(f"imgsim query: error: {failed} of {len(answers)} photos could not be searched",
                  file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def _print_answers(answers: list[dict[str, Any]], as_json: bool) -> None:
    """``query``'s answers as JSON, or as lines of rank, score, id, name and category."""
    if as_json:
        print(json.dumps(answers, indent=2, default=str))
        return
    for answer in answers:
        if len(answers) > 1:
            print(f"== {answer['photo']}" + (": could not be searched" if answer["error"] else ""))
        for found in answer["approaches"].values():
            print(f"{found['label']} ({found['metric']}, {found['seconds'] * 1000:.0f} ms)")
            if found.get("no_good_match"):
                print("  no good match: nothing like this in the catalogue; the closest items are")
            for row in found["results"]:
                print(f"  {row['rank']:>3}  {row['score']:.4f}  {row['id']}  {str(row['name'])[:60]}  "
                      f"[{row['category']}]")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from imgsim.engine import Engine

    engine = Engine.open(resolve_catalog(args.catalog))
    chosen = approach_list(args.approaches)
    approaches, missing = _requested(engine, chosen)
    if _cannot_answer("evaluate", approaches, missing, chosen):
        if args.json:
            print(json.dumps({"error": f"unavailable: {', '.join(missing)}", "unavailable": missing}))
        return EXIT_USER_ERROR
    report = engine.evaluate(args.label_column, args.k, approaches=approaches)
    if args.json:
        print(json.dumps({**report, "unavailable": missing}))
        return 0
    print(f"leave-one-out by {report['label_column']!r} over {report['n']} items "
          f"(chance precision {report['chance']:.3f})")
    k = report["k"]
    print(f"{'approach':<12} {'P@1':>7} {f'P@{k}':>7} {f'mAP@{k}':>7}")
    for approach in approaches_mod.names():
        if approach in report:
            s = report[approach]
            print(f"{approach:<12} {s['precision@1']:>7.3f} {s[f'precision@{k}']:>7.3f} {s[f'map@{k}']:>7.3f}"
                  + (f"  ({s['note']})" if s.get("note") else ""))
    return 0
