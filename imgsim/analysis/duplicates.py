"""Near-duplicate groups: items that are the same photo altered, told apart from "similar".

Three steps, each cheaper than the next is precise:

1. Same bytes (the items table's ``sha256``) are duplicates, no question asked.
2. Candidates: each item's nearest neighbours by the pretrained CNN vectors (the store's), above
   a cosine floor. Vectors alone cannot decide: on myntra_eval an item's nearest *distinct*
   item has a median cosine of 0.85, while a copy shrunk to 40% or relit can fall to 0.7-0.8.
3. The finer check on each candidate pair (:func:`imgsim.analysis.alignment.match_score`: the
   crop and rotation that best map one photo onto the other, then block-by-block correlation),
   plus a tenth of the CNN cosine, which keeps plain dark products of one shape (wallets,
   belts) apart where their outlines alone would match.

The line between copy and not is calibrated per catalogue from the catalogue itself: altered
copies of a sample of its own items (:mod:`imgsim.analysis.copies`) are the positives, the
sample's nearest distinct items the negatives. The threshold is saved as a small artifact
(``CATALOG/models/duplicates/``, see :mod:`imgsim.storage.artifacts`) for the pretrained model
it was made with, and refused for any other. Groups are the connected pairs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.analysis.alignment import grey, match_score
from imgsim.analysis.copies import Alteration, alter
from imgsim.ingest.images import decode_image, encode_jpeg, to_square
from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactError, load_artifact, write_artifact

KIND = "duplicate_threshold"
FORMAT_VERSION = 1
#: Version of the pair score (alignment, blocks, cosine weight); a change makes old thresholds stale.
METHOD = "align-blocks+0.1cos-v1"
#: The CNN cosine's share of a pair's score.
COSINE_WEIGHT = 0.1
THRESHOLD_FILE = "threshold.json"


@dataclasses.dataclass(frozen=True)
class DuplicateConfig:
    """How candidates are found and the threshold calibrated.

    Attributes:
        neighbours: Nearest neighbours of each item checked as candidates.
        calibration_items: Items sampled for calibration (each gets one altered copy).
        negatives_per_item: Nearest distinct items of each sampled item used as negatives.
        seed: Seed of the sample and the copies.
    """

    neighbours: int = 8
    calibration_items: int = 200
    negatives_per_item: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value, lo, hi in (("neighbours", self.neighbours, 1, 100),
                                    ("calibration_items", self.calibration_items, 7, 5000),
                                    ("negatives_per_item", self.negatives_per_item, 1, 20)):
            if not lo <= value <= hi:
                raise ValueError(f"`{name}` must be in [{lo}, {hi}]. Received: {name}={value}")


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A catalogue's calibrated line between copies and distinct items.

    Attributes:
        score: Pairs scoring at least this are duplicates (fine score + 0.1 x cosine).
        cosine_floor: Neighbours below this cosine are not candidates.
        positives: Calibration copies, with their score quantiles.
        negatives: Calibration negatives, with their score quantiles, and how many of the
            nearest distinct items scored like copies (left out as suspected duplicates).
        model: The pretrained store's model name and fingerprint it was made for.
    """

    score: float
    cosine_floor: float
    positives: dict[str, Any]
    negatives: dict[str, Any]
    model: dict[str, str]


def pair_score(fine: float, cosine: float) -> float:
    """A candidate pair's score: the finer check plus :data:`COSINE_WEIGHT` times the cosine."""
    return float(fine) + COSINE_WEIGHT * float(cosine)


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {f"q{int(q * 1000):03d}": round(float(np.quantile(x, q)), 4) for q in (0.01, 0.05, 0.1, 0.5, 0.9, 0.99, 0.995)}


def calibrate(vectors: np.ndarray, load_rgb: Callable[[int], np.ndarray],
              embed: Callable[[list[np.ndarray]], np.ndarray], model: dict[str, str],
              config: DuplicateConfig | None = None) -> Threshold:
    """Calibrates the duplicate threshold of a catalogue on copies of its own items.

    Args:
        vectors: ``(N, dim)`` unit rows, the catalogue's pretrained vectors.
        load_rgb: Row -> that item's photo, ``(H, W, 3)`` uint8.
        embed: Photos -> ``(n, dim)`` unit vectors in the same space as ``vectors``.
        model: ``{"model", "fingerprint"}`` of the pretrained store.
        config: Sample sizes and seed.

    Returns:
        :class:`Threshold`: halfway between the negatives' 99.5% quantile and the positives'
        10% quantile when those are in that order, else the negatives' quantile. Negatives that
        score like the copies are left out as suspected duplicates (a catalogue's own copies are
        often each other's nearest items), so the line stays between the copies' 5% and 10%
        quantiles, higher the closer the true negatives crowd in.

    Raises:
        ValueError: Fewer than 2 items.
    """
    config = config or DuplicateConfig()
    vectors = np.asarray(vectors, np.float32)
    n = len(vectors)
    if n < 2:
        raise ValueError(f"duplicates need at least 2 items. Received: {n}")
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(n, size=min(n, config.calibration_items), replace=False))
    kinds = list(Alteration)
    originals = {int(r): load_rgb(int(r)) for r in sample}
    copies = []
    for i, r in enumerate(sample):
        copy = alter(originals[int(r)], kinds[i % len(kinds)], rng)
        copies.append(decode_image(encode_jpeg(copy)))  # stored like an imported photo: a JPEG thumbnail
    copy_vectors = embed(copies)
    positives = np.array([pair_score(match_score(grey(originals[int(r)]), grey(c)), float(vectors[r] @ v))
                          for r, c, v in zip(sample, copies, copy_vectors)])
    cosines = np.sum(vectors[sample] * copy_vectors, axis=1)
    sims = vectors[sample] @ vectors.T
    sims[np.arange(len(sample)), sample] = -np.inf
    greys: dict[int, np.ndarray] = {}
    negatives = []
    for i, r in enumerate(sample):
        for j in np.argsort(-sims[i])[:config.negatives_per_item]:
            if float(sims[i, j]) >= 0.9999:  # the same picture under another id: not a negative
                continue
            a = greys.setdefault(int(r), grey(originals[int(r)]))
            b = greys.setdefault(int(j), grey(load_rgb(int(j))))
            negatives.append(pair_score(match_score(a, b), float(sims[i, j])))
    # A "negative" that scores like the copies (at or above their 5% quantile) is most likely a
    # duplicate the catalogue already holds: it is counted, and kept out of the negatives.
    negatives = np.array(negatives) if negatives else np.array([0.0])
    like_copies = float(np.quantile(positives, 0.05))
    suspected = int((negatives >= like_copies).sum())
    negatives = negatives[negatives < like_copies] if suspected < len(negatives) else np.array([0.0])
    lo, hi = float(np.quantile(negatives, 0.995)), float(np.quantile(positives, 0.1))
    score = (lo + hi) / 2 if hi > lo else lo
    floor = float(np.clip(np.quantile(cosines, 0.01) - 0.05, 0.5, 0.95))
    return Threshold(round(score, 4), round(floor, 4), {"count": len(positives), **_quantiles(positives)},
                     {"count": len(negatives), "suspected_duplicates": suspected, **_quantiles(negatives)},
                     dict(model))


def threshold_dir(catalog_root: str | Path) -> Path:
    """Where a catalogue's duplicate threshold lives: ``CATALOG/models/duplicates``."""
    return layout.model_dir(Path(catalog_root), "duplicates")


def save_threshold(root: str | Path, threshold: Threshold) -> dict[str, Any]:
    """Writes ``threshold`` as an artifact at ``root`` (atomically, with its manifest)."""
    def write(tmp: Path) -> None:
        (tmp / THRESHOLD_FILE).write_text(json.dumps(dataclasses.asdict(threshold), indent=2) + "\n", "utf-8")

    manifest = {"kind": KIND, "format_version": FORMAT_VERSION, "method": METHOD,
                "model": threshold.model.get("model"), "fingerprint": threshold.model.get("fingerprint")}
    return write_artifact(root, manifest, write)


def load_threshold(root: str | Path, model: dict[str, str]) -> Threshold:
    """Reads a threshold saved by :func:`save_threshold`, for the pretrained ``model`` only.

    Raises:
        imgsim.ArtifactError: Missing or damaged.
        imgsim.storage.artifacts.ArtifactMismatchError: Made for another model or pair score.
    """
    expect = {"method": METHOD, "model": model.get("model"), "fingerprint": model.get("fingerprint")}
    load_artifact(root, KIND, FORMAT_VERSION, expect=expect)
    data = json.loads((Path(root) / THRESHOLD_FILE).read_text("utf-8"))
    return Threshold(**data)


def candidate_pairs(vectors: np.ndarray, neighbours: int, floor: float,
                    batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest ``neighbours`` rows with cosine >= ``floor``, each pair once.

    Returns:
        ``(pairs (P, 2) int64 with i < j, cosines (P,) float32)``, sorted by pair.
    """
    vectors = np.asarray(vectors, np.float32)
    n = len(vectors)
    k = min(neighbours, n - 1)
    found: dict[tuple[int, int], float] = {}
    for start in range(0, n, batch):
        sims = vectors[start:start + batch] @ vectors.T
        rows = np.arange(start, min(n, start + batch))
        sims[rows - start, rows] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k > 0 else np.zeros((len(rows), 0), int)
        for i, js in zip(rows, top):
            for j in js:
                s = float(sims[i - start, j])
                if s >= floor:
                    found[(min(i, int(j)), max(i, int(j)))] = s
    keys = sorted(found)
    return np.asarray(keys, np.int64).reshape(-1, 2), np.asarray([found[p] for p in keys], np.float32)


def _groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def group_duplicates(vectors: np.ndarray, hashes: Sequence[str], load_rgb: Callable[[int], np.ndarray],
                     threshold: Threshold, config: DuplicateConfig | None = None) -> tuple[list[list[int]], list[dict]]:
    """Near-duplicate groups of a catalogue's rows.

    Args:
        vectors: ``(N, dim)`` unit rows.
        hashes: ``N`` content hashes (equal hashes are duplicates outright).
        load_rgb: Row -> photo, for the finer check of candidates.
        threshold: The calibrated :class:`Threshold`.
        config: How many neighbours are candidates.

    Returns:
        ``(groups, pairs)``: groups of two or more rows, each sorted, ordered by first row; and
        every accepted pair as ``{"a", "b", "reason", "score", "cosine"}``.
    """
    config = config or DuplicateConfig()
    n = len(vectors)
    if len(hashes) != n:
        raise ValueError(f"`hashes` must have one entry per vector ({n}). Received: {len(hashes)}")
    accepted: list[dict] = []
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h and h in first:
            accepted.append({"a": first[h], "b": i, "reason": "same bytes", "score": None, "cosine": 1.0})
        else:
            first.setdefault(h, i)
    same = {(p["a"], p["b"]) for p in accepted}
    pairs, cosines = candidate_pairs(vectors, config.neighbours, threshold.cosine_floor)
    greys: dict[int, np.ndarray] = {}
    for (i, j), cos in zip(pairs.tolist(), cosines.tolist()):
        if (i, j) in same or (hashes[i] and hashes[i] == hashes[j]):
            continue
        a = greys.setdefault(i, grey(load_rgb(i)))
        b = greys.setdefault(j, grey(load_rgb(j)))
        score = pair_score(match_score(a, b), cos)
        if score >= threshold.score:
            accepted.append({"a": i, "b": j, "reason": "altered copy", "score": round(score, 4),
                             "cosine": round(cos, 4)})
    return _groups(n, [(p["a"], p["b"]) for p in accepted]), accepted


@dataclasses.dataclass
class DuplicateReport:
    """The near-duplicate groups of a catalogue.

    Attributes:
        groups: Groups of rows of ``engine.items`` (two or more each).
        items: The same groups as ``[{"id", "name"}, ...]``.
        pairs: Every accepted pair (rows, reason, score, cosine).
        threshold: The calibrated threshold used.
        calibrated: True when the threshold was calibrated by this call (not loaded).
        seconds: Wall time of the whole call; ``calibration_seconds`` of the calibration alone.
    """

    groups: list[list[int]]
    items: list[list[dict[str, str]]]
    pairs: list[dict]
    threshold: Threshold
    calibrated: bool
    seconds: float
    calibration_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """``{"groups": [[{"id", "name"}, ...], ...], "threshold": score, "calibration": {...}}``."""
        return {"groups": self.items, "threshold": self.threshold.score,
                "calibration": {"cosine_floor": self.threshold.cosine_floor, "positives": self.threshold.positives,
                                "negatives": self.threshold.negatives, "model": self.threshold.model,
                                "calibrated_now": self.calibrated}}


def find_duplicates(engine: Any, *, recalibrate: bool = False, config: DuplicateConfig | None = None,
                    save: bool = True) -> DuplicateReport:
    """The near-duplicate groups of an open catalogue.

    The saved threshold is used when it was made for the catalogue's pretrained model; else
    (none yet, another model, ``recalibrate``) it is calibrated now and, with ``save``, saved.

    Args:
        engine: An open :class:`imgsim.Engine` with a pretrained store.
        recalibrate: Calibrate even when a matching threshold is saved.
        config: Candidates and calibration sizes.
        save: Write a new threshold into the catalogue (skipped where it is read-only).

    Returns:
        :class:`DuplicateReport`.

    Raises:
        ValueError: No pretrained store, or fewer than 2 items.
    """
    started = time.perf_counter()
    config = config or DuplicateConfig()
    store = engine.store("pretrained")
    vectors = np.asarray(store.embeddings, np.float32)
    model = {"model": str(store.manifest.get("model")), "fingerprint": str(store.manifest.get("fingerprint"))}
    paths = engine.items["thumb_path"].tolist()

    def load_rgb(row: int) -> np.ndarray:
        return decode_image(paths[row])

    extractor = engine.model("pretrained")

    def embed(photos: list[np.ndarray]) -> np.ndarray:
        squares = [to_square(p, extractor.image_size) for p in photos]
        return np.vstack([extractor.embed(np.stack(squares[i:i + 64])) for i in range(0, len(squares), 64)])

    root = threshold_dir(engine.catalog.root)
    threshold, calibrated, calibration_seconds = None, False, 0.0
    if not recalibrate and root.exists():
        try:
            threshold = load_threshold(root, model)
        except ArtifactError:
            threshold = None  # made for another model, or damaged: calibrated again below
    if threshold is None:
        t0 = time.perf_counter()
        threshold = calibrate(vectors, load_rgb, embed, model, config)
        calibration_seconds, calibrated = time.perf_counter() - t0, True
        if save:
            try:
                save_threshold(root, threshold)
            except OSError:
                pass  # a catalogue this process may not write: the threshold still serves this answer
    hashes = engine.items["sha256"].astype(str).tolist() if "sha256" in engine.items else [""] * len(vectors)
    groups, pairs = group_duplicates(vectors, hashes, load_rgb, threshold, config)
    ids, names = engine.items["id"].astype(str).tolist(), engine.items["name"].astype(str).tolist()
    items = [[{"id": ids[r], "name": names[r]} for r in g] for g in groups]
    return DuplicateReport(groups, items, pairs, threshold, calibrated, time.perf_counter() - started,
                           calibration_seconds)
