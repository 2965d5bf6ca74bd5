"""The tuned approach: a head over the pretrained features, learned from the catalogue's own items.

ImageNet features do not know that a phone photo of a kurta on a table and the kurta's studio
shot are one product. The head (:mod:`imgsim.approaches.tuned_head`) learns it from the
catalogue itself, with no labels: simulated phone photos of a training subset of items must land
nearest their own item's studio vector. Where the catalogue has labels (or categories), items of
one label are also pulled together, with a small weight. It applies to any query photo, and to
each region of one: the head is a matrix on top of the pretrained extractor.

Saved without pickle as ``models/tuned/``: ``projection.npy`` (dim x out), ``mean.npy`` (out,),
``noise.npy`` (dim x dim, the photo-noise covariance the fit used, so an evaluation can refit the
label term without a query's label) and a manifest (label column, weights, dims, the fitted
items, the base extractor's fingerprint).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.approaches.base import Approach, Drift, NotApplicableError, RegionSupport, added_since
from imgsim.approaches.pretrained import PRETRAINED, pretty_model
from imgsim.approaches.tuned_head import (
    CROPS_PER_PHOTO,
    DEFAULT_DIMS,
    DEFAULT_LABEL_WEIGHT,
    DEFAULT_RIDGE,
    PHOTO_SIZE,
    Projection,
    fit_head,
    photo_noise,
    training_views,
    usable_labels,
)
from imgsim.ingest.catalog import Catalog
from imgsim.progress import silent
from imgsim.storage.artifacts import (
    ArtifactError,
    ArtifactMismatchError,
    load_artifact,
    read_manifest,
    sha256_text,
    write_artifact,
)

TUNED = "tuned"
KIND = "tuned_projection"
FORMAT_VERSION = 2
METHOD = "item-discriminant-phonesim"
#: Items photographed for the fit, at most (a seeded sample of the catalogue beyond this). A
#: photo costs about 86 ms of CPU (simulated at 640x480, two crops embedded by Lite0), so 2,000
#: items x 1 photo is about 3 CPU-minutes, under 2 minutes on 2 cores, whatever the catalogue's size.
DEFAULT_TRAIN_ITEMS = 2000
#: One photo per item: on benchmarks/phone_photos.py two gave the same standard tier (0.79 / 0.97 /
#: 0.64 against 0.79 / 0.96 / 0.65) and a little more on the hard tier (ranked 1st 0.37 against 0.33),
#: for twice the cost.
DEFAULT_PHOTOS_PER_ITEM = 1
__all__ = ["TUNED", "Projection", "Tuned", "TunedExtractor", "TunedSettings", "cross_validated_scores",
           "fit_head", "save_projection", "usable_labels"]


def cross_validated_scores(features: np.ndarray, labels: np.ndarray, k: int, noise: np.ndarray, *,
                           label_weight: float = DEFAULT_LABEL_WEIGHT, dims: int = DEFAULT_DIMS,
                           folds: int = 5, curve_k: int = 0, seed: int = 0) -> dict[str, Any]:
    """Leave-one-out scores of ``tuned`` where no query's label helped fit the head it is ranked in.

    The labelled items are split into ``folds`` random folds; for each fold the head is refitted
    (the photo-noise term as fitted, the label term from the other folds' labels only), and the
    fold's items query the whole catalogue (itself excluded) through it.

    Args:
        features: ``(N, dim)`` pretrained vectors of every item.
        labels: ``(N,)`` labels; empty ones are not queries.
        k: Depth.
        noise: ``(dim, dim)`` the photo-noise covariance of the fitted head.
        label_weight: The label term's weight (0: the head uses no labels, one fit serves all folds).
        dims: Output dimensions.
        folds: Folds.
        curve_k: Also return precision@1..curve_k.
        seed: Seed of the folds.

    Returns:
        ``precision@1``, ``precision@k``, ``map@k`` (and ``curve``), plus a ``note``.
    """
    from imgsim.evaluate import curve_from_relevance, metrics_from_relevance, ranked_relevance

    labels = np.asarray(labels).astype(str)
    labelled = np.flatnonzero(labels != "")
    features, labels = np.asarray(features)[labelled], labels[labelled]
    fold_of = np.random.default_rng(seed).permutation(len(labels)) % folds
    depth = max(k, curve_k)
    relevance, n_relevant = [], []
    shared = fit_head(features, noise, dims=dims) if label_weight == 0 else None  # no labels: one fit
    for fold in range(folds):
        train = fold_of != fold
        head = shared or fit_head(features, noise, np.where(train, labels, ""), label_weight=label_weight, dims=dims)
        rel, n_rel = ranked_relevance(head.apply(features), labels, depth, queries=np.flatnonzero(~train))
        relevance.append(rel)
        n_relevant.append(n_rel)
    relevance, n_relevant = np.concatenate(relevance), np.concatenate(n_relevant)
    scores = metrics_from_relevance(relevance, n_relevant, k)
    if curve_k:
        scores["curve"] = curve_from_relevance(relevance[:, :curve_k])
    scores["note"] = f"{folds}-fold: each query's label was held out of the head it was scored in"
    return scores


class TunedExtractor:
    """The pretrained extractor followed by the catalogue's head (an ``Extractor``)."""

    def __init__(self, root: Path, manifest: dict[str, Any], projection: Projection, base) -> None:
        self.root = root
        self.manifest = manifest
        self.projection = projection
        self.base = base
        self.name = f"tuned_{base.name}"
        self.dim = int(projection.matrix.shape[1])
        self.image_size = base.image_size
        self.fingerprint = manifest["fingerprint"]
        self.options = {"label_column": manifest["label_column"], "base_options": dict(base.options)}

    @classmethod
    def load(cls, root: str | os.PathLike, base) -> TunedExtractor:
        """Loads a saved head on top of ``base``.

        Raises:
            ArtifactError: Missing, of another format, or damaged.
            ArtifactMismatchError: Fitted on another base model's features.
        """
        root = Path(root)
        try:
            manifest = load_artifact(root, KIND, FORMAT_VERSION, expect={
                "base_fingerprint": base.fingerprint, "base_options": dict(base.options)})
        except ArtifactMismatchError as err:
            raise ArtifactMismatchError(f"the tuned head was fitted on other pretrained features "
                                        f"and must be refitted ({err})") from err
        matrix = np.load(root / "projection.npy", allow_pickle=False)
        mean = np.load(root / "mean.npy", allow_pickle=False)
        return cls(root, manifest, Projection(matrix, mean), base)

    def noise(self) -> np.ndarray:
        """``(dim, dim)`` the photo-noise covariance the head was fitted with."""
        return np.load(self.root / "noise.npy", allow_pickle=False)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 -> ``(N, dim)`` unit float32 in the tuned space."""
        return self.projection.apply(self.base.embed(batch))


def save_projection(root: Path, projection: Projection, noise: np.ndarray, base, fit: dict[str, Any]) -> None:
    """Writes ``models/tuned`` atomically (see :func:`imgsim.storage.artifacts.write_artifact`).

    Args:
        root: The model directory.
        projection: The head.
        noise: ``(dim, dim)`` the photo-noise covariance it was fitted with.
        base: The base extractor.
        fit: What the fit was made of (``label_column``, ``label_weight``, item counts, seconds, ...).
    """
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "method": METHOD,
        **fit,
        "in_dim": int(projection.matrix.shape[0]),
        "dim": int(projection.matrix.shape[1]),
        "base_model": base.name,
        "base_fingerprint": base.fingerprint,
        "base_options": dict(base.options),
        # What determines the tuned vectors: the head and the features it applies to.
        "fingerprint": sha256_text(base.fingerprint, hash_array(projection.matrix), hash_array(projection.mean)),
    }

    def write(tmp: Path) -> None:
        np.save(tmp / "projection.npy", projection.matrix, allow_pickle=False)
        np.save(tmp / "mean.npy", projection.mean, allow_pickle=False)
        np.save(tmp / "noise.npy", np.asarray(noise, np.float32), allow_pickle=False)

    write_artifact(root, manifest, write)


def hash_array(array: np.ndarray) -> str:
    """The sha256 of an array's dtype, shape and bytes."""
    import hashlib

    a = np.ascontiguousarray(array)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class TunedSettings:
    """What the head is fitted on.

    Attributes:
        label_column: The column of labels whose items are pulled together; ``None`` takes
            ``label``, else ``category`` (the first with at least 2 labels of 2 or more items),
            else none: the head then learns identity alone.
        label_weight: The label term's weight against the photo term (0: labels are not used).
        dims: Output dimensions.
        train_items: Items photographed for the fit, at most (a seeded sample beyond this).
        photos_per_item: Simulated phone photos per training item (every other one hard).
        holdout: Ids never photographed for the fit (a benchmark's evaluation items).
        seed: Seed of the sample and the photos.
    """

    label_column: str | None = None
    label_weight: float = DEFAULT_LABEL_WEIGHT
    dims: int = DEFAULT_DIMS
    train_items: int = DEFAULT_TRAIN_ITEMS
    photos_per_item: int = DEFAULT_PHOTOS_PER_ITEM
    holdout: frozenset[str] = frozenset()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.label_column is not None and not (isinstance(self.label_column, str) and self.label_column):
            raise ValueError(f"`label_column` must be a non-empty string or None. "
                             f"Received: label_column={self.label_column!r}")
        if not (isinstance(self.label_weight, (int, float)) and 0.0 <= self.label_weight <= 10.0):
            raise ValueError(f"`label_weight` must be in [0, 10]. Received: label_weight={self.label_weight!r}")
        for name, low, high in (("dims", 1, 4096), ("train_items", 1, 1_000_000), ("photos_per_item", 1, 50)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"`{name}` must be an int in [{low}, {high}]. Received: {name}={value!r}")
        object.__setattr__(self, "holdout", frozenset(str(i) for i in self.holdout))


class Tuned(Approach):
    """The pretrained features through a head learned from simulated photos of the catalogue's items."""

    name = TUNED
    title = "Catalogue-tuned CNN features"
    depends_on = (PRETRAINED,)
    settings_type = TunedSettings
    supports_regions = True
    learns = True

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        base = pretty_model(str((manifest or {}).get("model", "tuned_efficientnet_lite0")).removeprefix("tuned_"))
        column = ((manifest or {}).get("options") or {}).get("label_column")
        return f"Catalogue-tuned {base}" + (f" (and {column!r})" if column else "")

    def default_settings(self, options) -> TunedSettings:
        """Pulls together the column the build copies into ``label`` when one is named."""
        return TunedSettings(label_column=options.label_column)

    def settings_from_manifest(self, catalog: Catalog) -> TunedSettings | None:
        """The settings the saved head was fitted with; None without a readable one."""
        try:
            m = read_manifest(self.model_dir(catalog), KIND)
            return TunedSettings(m["requested_label_column"], float(m["label_weight"]), int(m["requested_dims"]),
                                 int(m["train_items_limit"]), int(m["photos_per_item"]), seed=int(m["seed"]))
        except (ArtifactError, OSError, KeyError, TypeError, ValueError):
            return None

    def label_column(self, catalog: Catalog, requested: str | None) -> str | None:
        """The column whose items are pulled together: the one asked for, else ``label``, else
        ``category``; None when none has 2 labels of 2 or more items (identity alone).

        Raises:
            NotApplicableError: The column asked for does not have 2 labels with 2 or more items.
        """
        candidates = [requested] if requested else [catalog.label_column(), "category"]
        for column in dict.fromkeys(candidates):
            if column in catalog.ok.columns:
                labels = catalog.ok[column].fillna("").astype(str).to_numpy()
                if len(set(labels[usable_labels(labels)])) >= 2:
                    return column
        if requested:
            raise NotApplicableError(f"the catalogue has no column {requested!r} whose labels repeat (at least "
                                     "2 labels with 2 or more items each are needed to tune on)")
        return None

    def not_built_reason(self, catalog: Catalog) -> str:
        if len(catalog.ok) < 2:
            return "a tuned head needs at least 2 items"
        return "not fitted yet for this catalogue"

    def region_support(self, manifest: dict[str, Any]) -> RegionSupport:
        """Regions of the pretrained extractor the head was fitted on, mapped by the head."""
        from imgsim.approaches.pretrained import region_support_of

        base_options = (manifest.get("options") or {}).get("base_options")
        return region_support_of(str(manifest.get("model", "")).removeprefix("tuned_"), base_options)

    def region_vectors(self, model, vectors):
        """The tuned head applied to the region vectors."""
        return model.projection.apply(vectors)

    def evaluate(self, embeddings_of, labels, k, metric, curve_k=0, model_of=None):
        """Scored only on items whose labels were held out of the head they are ranked in."""
        model = model_of() if model_of is not None else None
        if model is None:
            raise ValueError("the tuned head's evaluation needs its model")
        weight = float(model.manifest.get("label_weight", 0.0)) if model.manifest.get("label_column") else 0.0
        return cross_validated_scores(embeddings_of(PRETRAINED), labels, k, model.noise(), label_weight=weight,
                                      dims=model.dim, curve_k=curve_k)

    def load_model(self, catalog, manifest, model_of):
        return TunedExtractor.load(self.model_dir(catalog), model_of(PRETRAINED))

    def _base(self, catalog: Catalog):
        """The pretrained store and its model, which the head applies to."""
        from imgsim.approaches import get
        from imgsim.storage.stores import Store

        pretrained = get(PRETRAINED)
        store = Store.load(pretrained.store_dir(catalog), catalog)
        return store, pretrained.load_model(catalog, store.manifest, lambda name: None)

    def build(self, catalog, settings: TunedSettings, *, log, progress, learn=True):
        from imgsim.storage.stores import is_current, model_spec, write_store

        base_store, base = self._base(catalog)
        try:
            current = TunedExtractor.load(self.model_dir(catalog), base)
        except ArtifactError:
            current = None
        if current is None and not learn:
            raise NotApplicableError("no fitted head to map with; fit one first")
        if current is None or (learn and current.manifest["label_column"]
                               != self.label_column(catalog, settings.label_column)):
            self.retrain(catalog, settings, log=log, progress=progress)
        elif is_current(catalog, self.name, model_spec(self.name, current)):
            log("tuned: head and store up to date")
        else:
            # The catalogue changed: map its items with the fitted head; refitting is on demand
            # (retrain), as for the autoencoder.
            write_store(catalog, self.name, current, current.projection.apply(np.asarray(base_store.embeddings)))
            log(f"tuned: mapped {len(catalog.ok)} items with the head fitted on "
                f"{current.manifest['fitted_items']} items")

    def retrain(self, catalog, settings: TunedSettings, *, log, progress=lambda stage: silent) -> None:
        """Photographs a training subset of items, fits the head, writes model and store.

        Raises:
            NotApplicableError: Fewer than 2 items, or no item left to photograph.
        """
        from imgsim.storage.stores import write_store

        if len(catalog.ok) < 2:
            raise NotApplicableError("a tuned head needs at least 2 items")
        column = self.label_column(catalog, settings.label_column)
        base_store, base = self._base(catalog)
        studio = np.asarray(base_store.embeddings, np.float32)
        ids = catalog.ok["id"].astype(str).to_numpy()
        eligible = np.flatnonzero(~np.isin(ids, list(settings.holdout)))
        if len(eligible) == 0:
            raise NotApplicableError("every item is held out: nothing is left to photograph for the fit")
        rows = np.sort(np.random.default_rng(settings.seed).permutation(eligible)[:settings.train_items])
        started = time.perf_counter()
        views, owners = training_views(lambda r: catalog.load_square(r, 256), rows, base.embed, base.image_size,
                                       settings.photos_per_item, settings.seed, progress(self.name))
        photographed = time.perf_counter()
        noise = photo_noise(views, owners, studio)
        labels = catalog.ok[column].fillna("").astype(str).to_numpy() if column else None
        head = fit_head(studio, noise, labels, label_weight=settings.label_weight, dims=settings.dims)
        seconds = time.perf_counter() - started
        fit = {"label_column": column, "requested_label_column": settings.label_column,
               "label_weight": settings.label_weight, "requested_dims": settings.dims, "ridge": DEFAULT_RIDGE,
               "train_items_limit": settings.train_items, "photos_per_item": settings.photos_per_item,
               "seed": settings.seed, "photo_size": list(PHOTO_SIZE), "crops_per_photo": CROPS_PER_PHOTO,
               "fitted_items": int(len(studio)), "photographed_items": int(len(rows)),
               "held_out_items": int(len(ids) - len(eligible)),
               "holdout_fingerprint": sha256_text(*sorted(settings.holdout)),
               "fitted_ids_fingerprint": sha256_text(*ids.tolist()),
               "photo_seconds": round(photographed - started, 3), "fit_seconds": round(seconds, 3)}
        save_projection(self.model_dir(catalog), head, noise, base, fit)
        tuned = TunedExtractor.load(self.model_dir(catalog), base)
        write_store(catalog, self.name, tuned, head.apply(studio))
        log(f"tuned: head learned from {len(views)} crops of {len(rows) * settings.photos_per_item} simulated "
            f"photos of {len(rows)} items" + (f", {column!r} pulled together" if column else ", no labels")
            + f", to {tuned.dim} dims in {seconds:.1f} s")

    def drift(self, catalog, model, *, retrain_ratio=1.5, retrain_share=0.2) -> Drift:
        """Items added since the head was fitted; refitting is advised past ``retrain_share``."""
        fitted = int(model.manifest.get("fitted_items", 0))
        new = len(added_since(catalog, str(model.manifest.get("created", ""))))
        due = new > retrain_share * len(catalog.ok)
        line = f"tuned: fitted on {fitted} items; {new} items added since"
        return Drift(self.name, line + ("; refitting is advised" if due else ""), due)
