"""Retrieval quality of every approach and variant on a labelled catalogue, with a plot.

Leave-one-out precision@1, precision@10 and mAP@10 by each label column, for: chance, a 16x16
pixel thumbnail, the catalogue's stores (pretrained, autoencoder by cosine and euclidean, tuned
scored on held-out folds), the pretrained extractor's options (GeM pooling, flip averaging) and
the larger Lite1/Lite2 (when their wheels are installed), each embedded afresh. Writes ``quality.json`` and ``precision_at_k.png`` into --out.

    .venv/bin/python -m imgsim build ../shared/data/myntra_eval \
        --labels ../shared/data/myntra_eval/labels.csv --out /tmp/myntra --approaches pretrained
    .venv/bin/python -m imgsim train /tmp/myntra --epochs 12
    .venv/bin/python benchmarks/quality.py /tmp/myntra --labels label subCategory --out bench-out
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from imgsim.approaches.features import ExtractorOptions, ExtractorUnavailableError, load_extractor
from imgsim.approaches.tuned import cross_validated_scores
from imgsim.build import load_squares
from imgsim.engine import Engine
from imgsim.evaluate import chance_precision, evaluate_embeddings
from imgsim.storage.stores import iter_batches

VARIANTS = {
    "pretrained+gem": ("efficientnet_lite0", ExtractorOptions(pooling="gem")),
    "pretrained+flip": ("efficientnet_lite0", ExtractorOptions(flip=True)),
    "pretrained+gem+flip": ("efficientnet_lite0", ExtractorOptions(pooling="gem", flip=True)),
    "lite1": ("efficientnet_lite1", ExtractorOptions()),
    "lite2": ("efficientnet_lite2", ExtractorOptions()),
}


def embed_all(engine: Engine, name: str, options: ExtractorOptions, cache: Path) -> np.ndarray:
    """Embeds the whole catalogue with extractor ``name`` and ``options`` (cached in ``cache``)."""
    if cache.exists():
        return np.load(cache, allow_pickle=False)
    extractor = load_extractor(name, options)
    parts = [extractor.embed(b) for b in iter_batches(engine.catalog.thumb_paths(), extractor.image_size, 32)]
    out = np.concatenate(parts)
    np.save(cache, out, allow_pickle=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog", type=Path)
    parser.add_argument("--labels", nargs="+", default=["label"])
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--skip-variants", action="store_true", help="only the built stores")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = Engine.open(args.catalog)

    spaces: dict[str, tuple[np.ndarray, str]] = {}
    spaces["thumbnail 16x16"] = (load_squares(engine.catalog, 16).reshape(len(engine.items), -1).astype(np.float32), "cosine")
    for approach in engine.approaches():
        if approach == "tuned":
            continue
        embeddings = np.asarray(engine.store(approach).embeddings)
        spaces[approach] = (embeddings, "cosine")
        if approach == "autoencoder":
            spaces["autoencoder (euclidean)"] = (embeddings, "euclidean")
    if not args.skip_variants:
        for name, (extractor, options) in VARIANTS.items():
            t = time.perf_counter()
            try:
                x = embed_all(engine, extractor, options, args.out / f"{name.replace('+', '_')}.npy")
            except ExtractorUnavailableError as err:
                print(f"skipped {name}: {err}")
                continue
            spaces[name] = (x, "cosine")
            print(f"embedded {name} in {time.perf_counter() - t:.0f} s", flush=True)

    report: dict = {"catalog": str(args.catalog), "n": len(engine.items), "by": {}}
    for column in args.labels:
        labels = engine.labels(column)
        rows: dict = {"chance": {"precision@10": chance_precision(labels)}}
        for name, (x, metric) in spaces.items():
            rows[name] = evaluate_embeddings(x, labels, 10, metric, curve_k=20)
        if "pretrained" in spaces:
            t = time.perf_counter()
            rows["tuned (5-fold held-out)"] = cross_validated_scores(spaces["pretrained"][0], labels, 10, curve_k=20)
            rows["tuned (5-fold held-out)"]["fit_seconds_total"] = time.perf_counter() - t
        report["by"][column] = rows
        print(f"\nby {column!r} (n={len(labels)})")
        print(f"  {'':<28} {'P@1':>6} {'P@10':>6} {'mAP@10':>7}")
        for name, s in rows.items():
            print(f"  {name:<28} {s.get('precision@1', float('nan')):6.3f} {s['precision@10']:6.3f} "
                  f"{s.get('map@10', float('nan')):7.3f}")
    (args.out / "quality.json").write_text(json.dumps(report, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.labels), figsize=(6 * len(args.labels), 4.5), squeeze=False)
    for ax, column in zip(axes[0], args.labels):
        for name, s in report["by"][column].items():
            if "curve" in s:
                ax.plot(range(1, len(s["curve"]) + 1), s["curve"], label=name)
        ax.axhline(report["by"][column]["chance"]["precision@10"], color="grey", ls=":", label="chance")
        ax.set(title=f"precision@k by {column}", xlabel="k", ylabel="precision@k", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out / "precision_at_k.png", dpi=110)
    print(f"\nwrote {args.out / 'quality.json'} and {args.out / 'precision_at_k.png'}")


if __name__ == "__main__":
    main()
