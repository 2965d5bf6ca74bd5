"""An honest "no good match": a per-catalogue, per-approach line under which the best result is no match.

Every query returns k results, even a photo of a duck against a fashion catalogue. The line is
fitted at build time from the catalogue's own data, searched as a shopper's photo is (region
search where the approach has it, through :class:`imgsim.query.QueryPipeline`):

- positives: the best score of a simulated phone photo (:func:`imgsim.phonesim.simulate_photo`)
  of a sampled catalogue item;
- negatives: the best score of photos of nothing the catalogue sells: bare scenes
  (:func:`imgsim.phonesim.make_scene`), sensor-noise frames, and photos of objects from another
  domain (scikit-image's sample photos: a cat, a coffee cup, a rocket, coins) posed in a scene.

Rule (:func:`fit_threshold`): with ``lo`` the negatives' 95% quantile and ``hi`` the positives'
5% quantile (in "closeness": the score for cosine, minus the distance for euclidean), the line
is halfway between them when ``hi > lo``; when they overlap it is ``hi``, so at most about 5%
of photos of the catalogue's own products are flagged, whatever that costs in missed unrelated
photos. A best result below the line is flagged ``no_good_match``.

The line is saved per approach as a small artifact (``CATALOG/models/match-<approach>``, see
:func:`imgsim.storage.layout.match_dir`) with the store's model identity and metric, and refused
(the flag is then None, with the reason) for another model. Cost: :data:`PHOTOS` photos per
catalogue (half of each kind), each searched by every approach, at 640x480 (queries are decoded
at 448 px anyway). A catalogue of fewer than :data:`MIN_ITEMS` items gets no line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.storage import layout
from imgsim.storage.artifacts import load_artifact, write_artifact

KIND = "match_threshold"
FORMAT_VERSION = 1
#: Version of the photos and the rule; a change makes old lines stale.
METHOD = "phonesim-best-score-q95neg-q05pos-v1"
THRESHOLD_FILE = "threshold.json"
#: Calibration photos per catalogue: half of the catalogue's own items, half of unrelated things.
PHOTOS = 100
#: Fewer ingested items than this: no line. A dozen items give 50 photos of the same few
#: products, a line that says more about the sample than the catalogue (and every test
#: catalogue's build would pay the calibration).
MIN_ITEMS = 20
#: Size of the calibration photos (width, height).
PHOTO_SIZE = (640, 480)
NEGATIVE_QUANTILE, POSITIVE_QUANTILE = 0.95, 0.05
#: Own photos are searched this deep: ``positives`` records how often the product came first and
#: how often it was in the top ``RECALL_K``.
RECALL_K = 10


@dataclasses.dataclass(frozen=True)
class MatchThreshold:
    """One approach's calibrated line.

    Attributes:
        approach: The approach.
        score: A best result scoring below this (cosine) or above it (euclidean distance) is no
            good match.
        metric: The store's metric the score is in (``cosine`` or ``euclidean``).
        model: The store's model identity (``model``, ``fingerprint``, ``options``).
        positives: Count and quantiles of the catalogue's own photos' best scores, the share
            the line flags, and (lines fitted since it was recorded) the shares of those photos
            whose product came first (``found_first``) and was in the top 10 (``found_in_top10``).
        negatives: The same for the unrelated photos.
    """

    approach: str
    score: float
    metric: str
    model: dict[str, Any]
    positives: dict[str, Any]
    negatives: dict[str, Any]

    def __post_init__(self) -> None:
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"`metric` must be cosine or euclidean. Received: metric={self.metric!r}")
        if not np.isfinite(self.score):
            raise ValueError(f"`score` must be finite. Received: score={self.score}")

    def flags(self, best: float) -> bool:
        """Whether a best result scoring ``best`` is no good match."""
        return bool(best < self.score) if self.metric == "cosine" else bool(best > self.score)


def model_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields of a store's manifest that name its model (a line is valid for these only)."""
    return {"model": manifest.get("model"), "fingerprint": manifest.get("fingerprint"),
            "options": manifest.get("options") or {}}


def _closeness(scores: np.ndarray, metric: str) -> np.ndarray:
    return np.asarray(scores, np.float64) * (1.0 if metric == "cosine" else -1.0)


def _summary(scores: np.ndarray, flagged: float) -> dict[str, Any]:
    qs = {f"q{int(q * 100):02d}": round(float(np.quantile(scores, q)), 4) for q in (0.05, 0.1, 0.5, 0.9, 0.95)}
    return {"count": int(len(scores)), "flagged": round(float(flagged), 4), **qs}


def fit_threshold(approach: str, positives: Iterable[float], negatives: Iterable[float], metric: str,
                  model: dict[str, Any]) -> MatchThreshold:
    """Fits the line between the best scores of own-product photos and of unrelated ones (rule above).

    Args:
        approach: The approach.
        positives: Best scores of photos of the catalogue's own items.
        negatives: Best scores of photos of things it does not sell.
        metric: ``cosine`` (higher is closer) or ``euclidean`` (a distance).
        model: :func:`model_identity` of the store.

    Raises:
        ValueError: Either list is empty.
    """
    pos, neg = np.asarray(list(positives), np.float64), np.asarray(list(negatives), np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"calibration needs positives and negatives. Received: {len(pos)} and {len(neg)}")
    cp, cn = _closeness(pos, metric), _closeness(neg, metric)
    lo, hi = float(np.quantile(cn, NEGATIVE_QUANTILE)), float(np.quantile(cp, POSITIVE_QUANTILE))
    line = (lo + hi) / 2 if hi > lo else hi
    score = line if metric == "cosine" else -line
    return MatchThreshold(approach, round(score, 6), metric, dict(model),
                          _summary(pos, float((cp < line).mean())), _summary(neg, float((cn < line).mean())))


def save_threshold(root: str | Path, threshold: MatchThreshold) -> dict[str, Any]:
    """Writes ``threshold`` as an artifact at ``root`` (atomically, with its manifest)."""
    def write(tmp: Path) -> None:
        (tmp / THRESHOLD_FILE).write_text(json.dumps(dataclasses.asdict(threshold), indent=2) + "\n", "utf-8")

    manifest = {"kind": KIND, "format_version": FORMAT_VERSION, "method": METHOD, "approach": threshold.approach,
                "metric": threshold.metric, **threshold.model}
    return write_artifact(root, manifest, write)


def load_threshold(root: str | Path, approach: str, store_manifest: dict[str, Any]) -> MatchThreshold:
    """Reads a line saved by :func:`save_threshold`, for the model of the store it is used with only.

    Raises:
        imgsim.ArtifactError: Missing or damaged.
        imgsim.storage.artifacts.ArtifactMismatchError: Made for another model, metric or method.
    """
    expect = {"method": METHOD, "approach": approach, "metric": store_manifest.get("metric", "cosine"),
              **model_identity(store_manifest)}
    load_artifact(root, KIND, FORMAT_VERSION, expect=expect)
    data = json.loads((Path(root) / THRESHOLD_FILE).read_text("utf-8"))
    return MatchThreshold(**data)


def calibration_photos(load_rgb: Callable[[int], np.ndarray], n_items: int, seed: int = 0,
                       photos: int = PHOTOS, size: tuple[int, int] = PHOTO_SIZE
                       ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The calibration photos: phone photos of sampled items, and photos of unrelated things.

    Args:
        load_rgb: Row -> that item's photo, ``(H, W, 3)`` uint8.
        n_items: Rows in the catalogue.
        seed: Seed of the sample and the photos.
        photos: How many in all (half of each kind).
        size: ``(width, height)`` of each photo.

    Returns:
        ``(own, unrelated)``: lists of ``(height, width, 3)`` uint8 photos.
    """
    from imgsim.phonesim import product_mask, simulate_photo

    rng = np.random.default_rng(seed)
    half = max(1, photos // 2)
    own = []
    for row in _own_rows(rng, n_items, half):
        product = load_rgb(int(row))
        rgba = np.dstack([product, (product_mask(product) * 255).astype(np.uint8)])
        own.append(simulate_photo(rgba, rng, size=size, split="eval").rgb)
    return own, [unrelated_photo(rng, i, size) for i in range(half)]


def _own_rows(rng: np.random.Generator, n_items: int, half: int) -> np.ndarray:
    """The rows photographed by :func:`calibration_photos` (its generator's first draw)."""
    return rng.permutation(np.resize(np.arange(n_items), max(half, n_items)))[:half]


def unrelated_photo(rng: np.random.Generator, i: int, size: tuple[int, int] = PHOTO_SIZE) -> np.ndarray:
    """A photo of nothing a catalogue sells, by ``i % 3``: a bare scene, sensor noise, or an
    object from another domain (a crop of a scikit-image sample photo; a scene without it)."""
    from PIL import Image

    from imgsim.phonesim import _load_samples, make_scene, simulate_photo

    w, h = size
    kind = i % 3
    samples = _load_samples()
    if kind == 1:
        grain = rng.uniform(4, 64)
        small = rng.integers(0, 256, (max(2, int(h / grain)), max(2, int(w / grain)), 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR))
    if kind == 2 and samples:
        src = samples[int(rng.integers(len(samples)))]
        sh, sw = src.shape[:2]
        cw, ch = int(sw * rng.uniform(0.5, 1.0)), int(sh * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
        return simulate_photo(np.ascontiguousarray(src[y0:y0 + ch, x0:x0 + cw]), rng, size=size).rgb
    return make_scene(rng, size)


def calibrate(catalog, approaches: Iterable[str], *, photos: int = PHOTOS, seed: int = 0,
              log: Callable[[str], None] = lambda message: None) -> dict[str, MatchThreshold]:
    """Fits and saves the line of each approach whose store is built and whose line is missing or stale.

    Each photo is searched as a shopper's photo is (:meth:`imgsim.engine.Engine.search`), by every
    approach, k=1.

    Args:
        catalog: The :class:`imgsim.ingest.catalog.Catalog`.
        approaches: The approaches to calibrate (those without a store are skipped).
        photos: Calibration photos in all.
        seed: Seed of the photos.
        log: Receives one line per line fitted (nothing when all are current or there are too few items).

    Returns:
        The lines fitted, by approach (empty for a catalogue under :data:`MIN_ITEMS` items).
    """
    from imgsim.engine import Engine
    from imgsim.storage.artifacts import ArtifactError

    if len(catalog.ok) < MIN_ITEMS:  # quietly: the engine says why there is no line
        return {}
    engine = Engine(catalog)
    try:
        todo = []
        available = engine.approaches()
        for approach in (a for a in approaches if a in available):
            try:
                load_threshold(layout.match_dir(catalog.root, approach), approach, engine.store(approach).manifest)
            except ArtifactError:
                todo.append(approach)
        if not todo:
            return {}
        own, unrelated = calibration_photos(lambda r: catalog.load_square(r, 224), len(catalog.ok), seed, photos)
        # Own photos are searched to k=10, so the line also records how often each approach
        # finds the photographed product (what the app tells a shopper each approach is for).
        own_ids = catalog.ok["id"].to_numpy()[_own_rows(np.random.default_rng(seed), len(catalog.ok), len(own))]
        best: dict[str, list[list[float]]] = {a: [[], []] for a in todo}
        ranks: dict[str, list[int]] = {a: [] for a in todo}
        for kind, group in enumerate((own, unrelated)):
            for i, rgb in enumerate(group):
                for approach in todo:
                    result = engine.search(rgb, approach, RECALL_K if kind == 0 else 1)
                    best[approach][kind].append(float(result.items["score"].iloc[0]))
                    if kind == 0:
                        found = np.flatnonzero(result.items["id"].to_numpy() == own_ids[i])
                        ranks[approach].append(int(found[0]) if len(found) else RECALL_K)
        fitted = {}
        for approach in todo:
            manifest = engine.store(approach).manifest
            line = fit_threshold(approach, best[approach][0], best[approach][1], manifest.get("metric", "cosine"),
                                 model_identity(manifest))
            rank = np.asarray(ranks[approach])
            line = dataclasses.replace(line, positives={**line.positives, "found_first": round(float(np.mean(rank == 0)), 4),
                                                        f"found_in_top{RECALL_K}": round(float(np.mean(rank < RECALL_K)), 4)})
            save_threshold(layout.match_dir(catalog.root, approach), line)
            log(f"{approach}: no-good-match line {line.score:.4f} from {len(own)} own and {len(unrelated)} "
                f"unrelated photos (flags {line.positives['flagged']:.0%} of own, "
                f"{line.negatives['flagged']:.0%} of unrelated)")
            fitted[approach] = line
        return fitted
    finally:
        engine.close()
