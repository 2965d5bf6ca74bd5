"""Multisearch on myntra_eval: words alone, a photo plus a colour word, and filters on any column.

Builds (once, cached under --work) a catalogue of a stratified, seeded subset of the labelled
folder (as ``benchmarks/phone_photos.py`` does) with the pretrained store, then reports:

- **words alone**: precision@5 of ``"<baseColour> <articleType>"`` queries (``"Blue Tshirts"``):
  the share of the top 5 with both that colour and that type, over every (colour, type) pair
  with at least 5 items;
- **photo + a colour word**: a catalogue photo of type T in colour A, plus the word of another
  colour B that T comes in; precision@3 of type T in colour B, for the photo alone (weight 0),
  each fusion weight given (:func:`imgsim.text.fuse`) and the words alone (``"B"``);
- **filters**: conditions on several columns (text, numeric, narrow and wide) through every
  backend (exact, HNSW, Milvus Lite when installed): whether every result meets them and ``k``
  came back whenever ``k`` items pass.

    .venv/bin/python benchmarks/multisearch.py --items 1500 --json bench-out/multisearch.json

Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phone_photos import DEFAULT_DATA, LABEL, subset  # noqa: E402 (the same seeded subset)

from imgsim.build import BuildOptions, build  # noqa: E402
from imgsim.engine import Engine  # noqa: E402
from imgsim.index import Filter  # noqa: E402
from imgsim.index.factory import publish  # noqa: E402
from imgsim.storage.stores import Store, store_path  # noqa: E402
from imgsim.text import POOL, TextIndex, fuse  # noqa: E402

COLOUR = "baseColour"
#: Filters tried through every backend: text, numeric, combined, narrow and wide.
WHERE = [
    ("gender=Women",), ("baseColour=Blue",), ("year>=2016",), ("usage=Casual", "year<=2012"),
    ("articleType=Shirts", "baseColour=White"), ("season=Summer", "gender=Men", "year>=2012"),
]


def words_alone(engine: Engine, min_items: int, limit: int, rng: np.random.Generator) -> dict:
    """Precision@5 of "<colour> <type>" queries over (colour, type) pairs with >= min_items items."""
    items = engine.items
    counts = items.groupby([COLOUR, LABEL]).size()
    pairs = [p for p, n in counts.items() if n >= min_items and p[0] and p[1]]
    if len(pairs) > limit:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), limit, replace=False))]
    hits = []
    for colour, kind in pairs:
        top = engine.search_text(f"{colour} {kind}", 5).items
        hits.append(float(((top[COLOUR] == colour) & (top[LABEL] == kind)).sum()) / 5)
    return {"queries": len(pairs), "precision@5": round(float(np.mean(hits)), 3) if hits else None}


def photo_plus_colour(engine: Engine, weights: list[float], n: int, rng: np.random.Generator) -> dict:
    """Precision@3 of type T in colour B for a photo of T in colour A plus the word B."""
    items = engine.items.reset_index(drop=True)
    counts = items.groupby([LABEL, COLOUR]).size()
    colours_of = {kind: [c for (k, c), m in counts.items() if k == kind and c and m >= 3]
                  for kind in items[LABEL].unique()}
    candidates = [row for row, (kind, colour) in enumerate(zip(items[LABEL], items[COLOUR]))
                  if len([c for c in colours_of.get(kind, []) if c != colour]) >= 1]
    rows = rng.choice(candidates, min(n, len(candidates)), replace=False)
    backend = engine.index("pretrained")
    embeddings = np.asarray(engine.store("pretrained").embeddings)
    text = TextIndex(items)
    by_weight: dict[str, list[float]] = {str(w): [] for w in weights}
    by_weight["words alone"] = []
    for row in rows:
        kind, colour = items[LABEL][row], items[COLOUR][row]
        wanted = str(rng.choice([c for c in colours_of[kind] if c != colour]))
        good = ((items[LABEL] == kind) & (items[COLOUR] == wanted)).to_numpy()
        pool = backend.search(embeddings[row], POOL, filter=Filter(exclude_rows=(int(row),)))
        scores = text.scores(wanted)
        for w in weights:
            fused = fuse(pool, scores, 3, weight=w)[0]
            by_weight[str(w)].append(float(good[fused.rows[0]].mean()))
        alone = text.search(wanted, 3).rows[0]
        by_weight["words alone"].append(float(good[alone].mean()) if len(alone) else 0.0)
    return {"queries": len(rows), "precision@3": {w: round(float(np.mean(v)), 3) for w, v in by_weight.items()}}


def filters(engine: Engine, k: int, n: int, rng: np.random.Generator) -> dict:
    """For each condition set: whether every result met it and k came back whenever k passed."""
    items = engine.items
    out = {}
    embeddings = np.asarray(engine.store("pretrained").embeddings)
    for where in WHERE:
        passing = Filter(where=where).mask(items)
        rows = rng.choice(len(items), n, replace=False)
        met, full, started = True, True, time.perf_counter()
        for row in rows:
            hits = engine.index("pretrained").search(embeddings[row], k, filter=Filter(where=where))
            met &= bool(passing[hits.rows[0]].all())
            full &= hits.rows.shape[1] == min(k, int(passing.sum()))
        out[" & ".join(where)] = {"passing": int(passing.sum()), "all_meet": met, "k_back": full,
                                  "ms_per_query": round((time.perf_counter() - started) * 1000 / n, 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        print(f"skipped: no labels.csv in {args.data} (the labelled myntra_eval folder)")
        return 0
    folder = subset(args.data, args.items, args.seed, args.work)
    catalog_dir = args.work / f"catalog-{args.items}-{args.seed}"
    options = BuildOptions(approaches=("pretrained",), labels=str(folder / "labels.csv"), label_column=LABEL,
                           ann="never")
    catalog = build(str(folder), catalog_dir, options, log=lambda line: print(line, file=sys.stderr))
    publish(catalog, "local", {})
    rng = np.random.default_rng(args.seed)
    engine = Engine(catalog)
    report: dict = {"catalog_items": len(engine.items), "seed": args.seed,
                    "words_alone": words_alone(engine, 5, args.pairs, rng),
                    "photo_plus_colour": photo_plus_colour(engine, args.weights, args.photos, rng),
                    "filters": {}}
    print(json.dumps(report, indent=2), file=sys.stderr)
    report["filters"][engine.search_backend("pretrained")] = filters(engine, args.k, args.filter_queries, rng)
    engine.close()
    catalog = build(str(folder), catalog_dir, dataclasses.replace(options, ann="always"))
    engine = Engine(catalog)
    report["filters"][engine.search_backend("pretrained")] = filters(engine, args.k, args.filter_queries, rng)
    engine.close()
    if importlib.util.find_spec("milvus_lite") is not None:
        store = Store.load(store_path(catalog, "pretrained"), catalog)
        publish(catalog, str(args.work / "vectors.db"), {"pretrained": store})
        engine = Engine(catalog)
        try:
            report["filters"]["milvus lite"] = filters(engine, args.k, args.filter_queries, rng)
        finally:
            engine.close()
            publish(catalog, "local", {})
    print(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled image folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgsim-multisearch-bench"),
                        help="cache for the catalogue (never committed)")
    parser.add_argument("--items", type=int, default=1500, help="catalogue size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=60, help="colour + type queries at most")
    parser.add_argument("--photos", type=int, default=200, help="photo + colour queries")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
                        help="fusion weights of the words (0: the photo alone)")
    parser.add_argument("--filter-queries", type=int, default=20, help="queries per filter and backend")
    parser.add_argument("-k", type=int, default=10, help="results per filtered query")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    return parser.parse_args(argv)


def table(report: dict) -> str:
    """The numbers as Markdown tables."""
    words = report["words_alone"]
    lines = [f"catalogue: {report['catalog_items']} items (seed {report['seed']})", "",
             f"words alone, \"colour type\": precision@5 {words['precision@5']} over {words['queries']} queries",
             "", f"photo + a colour word ({report['photo_plus_colour']['queries']} queries): precision@3 of the "
             "photo's type in that colour", "", "| words' weight | precision@3 |", "|---|---|"]
    lines += [f"| {w} | {p} |" for w, p in report["photo_plus_colour"]["precision@3"].items()]
    lines += ["", "| backend | filter | passing | all meet it | k came back | ms/query |", "|---|---|---|---|---|---|"]
    for backend, rows in report["filters"].items():
        lines += [f"| {backend} | {w} | {r['passing']} | {r['all_meet']} | {r['k_back']} | {r['ms_per_query']} |"
                  for w, r in rows.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

