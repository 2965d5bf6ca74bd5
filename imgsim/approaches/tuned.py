"""The tuned approach: a projection of the pretrained features learned from the catalogue's labels.

ImageNet features know "garment" but not a shop's "kurta" versus "tunic". Shrinkage-regularised
linear discriminant analysis, fitted on the catalogue's own labels, projects the features onto the
directions that separate those labels; retrieval then runs by cosine in the projected space. It
applies to any query photo: the projection is a matrix on top of the pretrained extractor.

Saved without pickle as ``models/tuned/``: ``projection.npy`` (dim x out), ``mean.npy`` (out,)
and a manifest (label column, classes, dims, fitted items, the base extractor's fingerprint).
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
FORMAT_VERSION = 1
DEFAULT_DIMS = 64
# Measured on myntra_eval (fit on one half's article types, P@10 on the other half, raw 0.759):
# Ledoit-Wolf "auto" 0.769, 0.3 -> 0.818, 0.1 -> 0.821, 0.01 -> 0.818; "auto" over-shrinks here.
DEFAULT_SHRINKAGE = 0.1


@dataclasses.dataclass(frozen=True)
class Projection:
    """``x -> normalise((x @ matrix) - mean)``: an LDA projection, centred on the fitted items.

    Attributes:
        matrix: ``(in_dim, out_dim)`` float32.
        mean: ``(out_dim,)`` float32, the projected mean of the fitted items.
        classes: The labels it was fitted on.
    """

    matrix: np.ndarray
    mean: np.ndarray
    classes: tuple[str, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Projects ``(N, in_dim)`` features to ``(N, out_dim)`` unit vectors."""
        y = np.asarray(x, dtype=np.float32) @ self.matrix - self.mean
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


def usable_labels(labels: np.ndarray) -> np.ndarray:
    """A mask of the items whose label is non-empty and shared by at least one other item."""
    labels = np.asarray(labels).astype(str)
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (labels != "") & (counts[inverse] >= 2)


def fit_projection(features: np.ndarray, labels: np.ndarray, dims: int = DEFAULT_DIMS,
                   shrinkage: float = DEFAULT_SHRINKAGE) -> Projection:
    """Fits shrinkage LDA on the items with a usable label.

    Args:
        features: ``(N, dim)`` pretrained embeddings.
        labels: ``(N,)`` strings; empty labels and classes of one item are ignored.
        dims: Output dimensions (at most the number of classes - 1).
        shrinkage: Weight of the identity in the within-class covariance, in [0, 1].

    Raises:
        ValueError: Fewer than two classes with at least two items each.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    labels = np.asarray(labels).astype(str)
    mask = usable_labels(labels)
    classes = np.unique(labels[mask])
    if len(classes) < 2:
        raise ValueError(
            "tuning needs at least 2 labels with 2 or more items each. "
            f"Received: {len(classes)} such label(s) among {int((labels != '').sum())} labelled items"
        )
    out_dims = int(min(dims, len(classes) - 1))
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage, n_components=out_dims)
    x = np.asarray(features, dtype=np.float64)[mask]
    lda.fit(x, labels[mask])
    matrix = lda.scalings_[:, :out_dims].astype(np.float32)
    mean = (x @ matrix).mean(axis=0).astype(np.float32)
    return Projection(matrix, mean, tuple(str(c) for c in classes))


def cross_validated_scores(features: np.ndarray, labels: np.ndarray, k: int, *, folds: int = 5,
                           dims: int = DEFAULT_DIMS, curve_k: int = 0, seed: int = 0) -> dict[str, Any]:
    """Leave-one-out scores of ``tuned`` where no query's label helped fit its projection.

    The labelled items are split into ``folds`` random folds; for each fold the projection is
    fitted on the other folds' labels, and the fold's items query the whole catalogue (itself
    excluded) in that projection.

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
    for fold in range(folds):
        train = fold_of != fold
        projection = fit_projection(features[train], labels[train], dims)
        queries = np.flatnonzero(~train)
        rel, n_rel = ranked_relevance(projection.apply(features), labels, depth, queries=queries)
        relevance.append(rel)
        n_relevant.append(n_rel)
    relevance, n_relevant = np.concatenate(relevance), np.concatenate(n_relevant)
    scores = metrics_from_relevance(relevance, n_relevant, k)
    if curve_k:
        scores["curve"] = curve_from_relevance(relevance[:, :curve_k])
    scores["note"] = f"{folds}-fold: each query's label was held out of the projection it was scored in"
    return scores


class TunedExtractor:
    """The pretrained extractor followed by the catalogue's projection (an ``Extractor``)."""

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
        """Loads a saved projection on top of ``base``.

        Raises:
            ArtifactError: Missing, of another format, or damaged.
            ArtifactMismatchError: Fitted on other pretrained features.
        """
        root = Path(root)
        try:
            manifest = load_artifact(root, KIND, FORMAT_VERSION, expect={
                "base_fingerprint": base.fingerprint, "base_options": dict(base.options)})
        except ArtifactMismatchError as err:
            raise ArtifactMismatchError(f"the tuned projection was fitted on other pretrained features "
                                        f"and must be refitted ({err})") from err
        matrix = np.load(root / "projection.npy", allow_pickle=False)
        mean = np.load(root / "mean.npy", allow_pickle=False)
        return cls(root, manifest, Projection(matrix, mean, tuple(manifest["classes"])), base)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 -> ``(N, dim)`` unit float32 in the tuned space."""
        return self.projection.apply(self.base.embed(batch))


def save_projection(root: Path, projection: Projection, base, label_column: str,
                    fitted_ids: list[str], seconds: float) -> None:
    """Writes ``models/tuned`` atomically (see :func:`imgsim.storage.artifacts.write_artifact`)."""
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "method": "lda-shrinkage",
        "shrinkage": DEFAULT_SHRINKAGE,
        "label_column": label_column,
        "classes": list(projection.classes),
        "n_classes": len(projection.classes),
        "in_dim": int(projection.matrix.shape[0]),
        "dim": int(projection.matrix.shape[1]),
        "fitted_items": len(fitted_ids),
        "fitted_ids_fingerprint": sha256_text(*fitted_ids),
        "base_model": base.name,
        "base_fingerprint": base.fingerprint,
        "base_options": dict(base.options),
        "fit_seconds": round(seconds, 3),
        # What determines the tuned vectors: the projection and the features it applies to.
        "fingerprint": sha256_text(base.fingerprint, hash_array(projection.matrix), hash_array(projection.mean)),
    }

    def write(tmp: Path) -> None:
        np.save(tmp / "projection.npy", projection.matrix, allow_pickle=False)
        np.save(tmp / "mean.npy", projection.mean, allow_pickle=False)

    write_artifact(root, manifest, write)


def hash_array(array: np.ndarray) -> str:
    """The sha256 of an array's dtype, shape and bytes."""
    import hashlib

    a = np.ascontiguousarray(array)
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class TunedSettings:
    """What the projection is fitted on.

    Attributes:
        label_column: The column of labels to separate; ``None`` takes ``label``, else ``category``
            (the first with at least 2 labels of 2 or more items).
    """

    label_column: str | None = None

    def __post_init__(self) -> None:
        if self.label_column is not None and not (isinstance(self.label_column, str) and self.label_column):
            raise ValueError(f"`label_column` must be a non-empty string or None. "
                             f"Received: label_column={self.label_column!r}")


class Tuned(Approach):
    """The pretrained features projected by shrinkage LDA fitted on the catalogue's labels."""

    name = TUNED
    title = "Catalogue-tuned CNN features"
    depends_on = (PRETRAINED,)
    settings_type = TunedSettings
    supports_regions = True
    learns = True

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        base = pretty_model(str((manifest or {}).get("model", "tuned_efficientnet_lite0")).removeprefix("tuned_"))
        column = ((manifest or {}).get("options") or {}).get("label_column")
        return f"Catalogue-tuned {base}" + (f" (on {column!r})" if column else "")

    def default_settings(self, options) -> TunedSettings:
        """Tunes on the column the build copies into ``label`` when one is named."""
        return TunedSettings(label_column=options.label_column)

    def settings_from_manifest(self, catalog: Catalog) -> TunedSettings | None:
        """The label column the saved projection was fitted on; None without a readable one."""
        try:
            return TunedSettings(read_manifest(self.model_dir(catalog), KIND)["label_column"])
        except (ArtifactError, OSError, KeyError, ValueError):
            return None

    def label_column(self, catalog: Catalog, requested: str | None) -> str:
        """The column to tune on: the one asked for, else ``label``, else ``category``.

        Raises:
            NotApplicableError: No candidate column has 2 labels with 2 or more items each.
        """
        candidates = [requested] if requested else [catalog.label_column(), "category"]
        for column in dict.fromkeys(candidates):
            if column in catalog.ok.columns:
                labels = catalog.ok[column].fillna("").astype(str).to_numpy()
                if len(set(labels[usable_labels(labels)])) >= 2:
                    return column
        wanted = f"column {requested!r}" if requested else "labels or categories"
        raise NotApplicableError(f"the catalogue has no {wanted} that repeat (at least 2 labels with "
                                 "2 or more items each are needed to tune on)")

    def not_built_reason(self, catalog: Catalog) -> str:
        try:
            self.label_column(catalog, None)
        except NotApplicableError as err:
            return str(err)
        return "not fitted yet for this catalogue"

    def region_support(self, manifest: dict[str, Any]) -> RegionSupport:
        """Regions of the pretrained extractor the projection was fitted on, projected."""
        from imgsim.approaches.pretrained import region_support_of

        base_options = (manifest.get("options") or {}).get("base_options")
        return region_support_of(str(manifest.get("model", "")).removeprefix("tuned_"), base_options)

    def region_vectors(self, model, vectors):
        """The tuned projection of the region vectors."""
        return model.projection.apply(vectors)

    def evaluate(self, embeddings_of, labels, k, metric, curve_k=0):
        """Scored only on items whose labels were held out of the projection they are ranked in."""
        return cross_validated_scores(embeddings_of(PRETRAINED), labels, k, curve_k=curve_k)

    def load_model(self, catalog, manifest, model_of):
        return TunedExtractor.load(self.model_dir(catalog), model_of(PRETRAINED))

    def _base(self, catalog: Catalog):
        """The pretrained store and its model, which the projection applies to."""
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
            raise NotApplicableError("no fitted projection to project with; fit one first")
        if current is None or (learn and current.manifest["label_column"]
                               != self.label_column(catalog, settings.label_column)):
            self.retrain(catalog, settings, log=log, progress=progress)
        elif is_current(catalog, self.name, model_spec(self.name, current)):
            log("tuned: projection and store up to date")
        else:
            # The catalogue changed: project its items with the fitted projection; refitting is
            # on demand (retrain), as for the autoencoder.
            write_store(catalog, self.name, current, current.projection.apply(np.asarray(base_store.embeddings)))
            log(f"tuned: projected {len(catalog.ok)} items with the projection fitted on "
                f"{current.manifest['fitted_items']} items")

    def retrain(self, catalog, settings: TunedSettings, *, log, progress=lambda stage: silent) -> None:
        """Fits the projection on the catalogue's labels as they are now; writes model and store."""
        from imgsim.storage.stores import write_store

        column = self.label_column(catalog, settings.label_column)
        base_store, base = self._base(catalog)
        features = np.asarray(base_store.embeddings)
        labels = catalog.ok[column].fillna("").astype(str).to_numpy()
        started = time.perf_counter()
        projection = fit_projection(features, labels)
        seconds = time.perf_counter() - started
        fitted_ids = catalog.ok["id"][usable_labels(labels)].tolist()
        save_projection(self.model_dir(catalog), projection, base, column, fitted_ids, seconds)
        tuned = TunedExtractor.load(self.model_dir(catalog), base)
        write_store(catalog, self.name, tuned, projection.apply(features))
        log(f"tuned: LDA on {column!r} ({len(projection.classes)} classes) to {tuned.dim} dims in {seconds:.1f} s")

    def drift(self, catalog, model, *, retrain_ratio=1.5, retrain_share=0.2) -> Drift:
        """Items added since the projection was fitted; refitting is advised past ``retrain_share``."""
        fitted = int(model.manifest.get("fitted_items", 0))
        new = len(added_since(catalog, str(model.manifest.get("created", ""))))
        due = new > retrain_share * len(catalog.ok)
        line = f"tuned: fitted on {fitted} labelled items; {new} items added since"
        return Drift(self.name, line + ("; refitting is advised" if due else ""), due)
