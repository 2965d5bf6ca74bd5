"""The approaches: the ways a catalogue item becomes a vector, one class each.

An approach knows its name and label, where its store and model live in a catalogue, what it
needs before it can be built, how to build (the only code that writes its artifacts), and how to
load the model that embeds queries for an existing store (reading only, refusing a stale one).
The engine, the build, the command line and the pages iterate over :data:`APPROACHES`; adding an
approach means adding a class here.

Layout inside a catalogue::

    stores/<approach>/       the embedding store (see :mod:`imgsim.storage.stores`)
    models/<approach>/       a learned model, for approaches that learn one
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.ingest.catalog import Catalog
from imgsim.progress import Progress, silent
from imgsim.storage.artifacts import ArtifactError

PRETRAINED, AUTOENCODER, TUNED = "pretrained", "autoencoder", "tuned"
PRETTY_MODELS = {
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "vgg16_fc1": "VGG16 fc1",
}

Log = Callable[[str], None]
ProgressFactory = Callable[[str], Progress]


class BuildSettings(Protocol):
    """What an approach reads from the build options (``imgsim.build.BuildOptions`` has it)."""

    extractor: str
    extractor_options: Any
    autoencoder: Any
    label_column: str | None


class NotApplicableError(ImgsimError, ValueError):
    """An approach cannot be built for this catalogue (say, ``tuned`` without repeated labels)."""


def pretty_model(name: str) -> str:
    """A model's display name: ``efficientnet_lite2`` -> ``EfficientNet-Lite2``."""
    return PRETTY_MODELS.get(name, name)


class Approach:
    """One way of embedding a catalogue; subclasses fill in the details."""

    name: str = ""
    title: str = ""
    depends_on: tuple[str, ...] = ()
    #: Whether a query can be a set of regions of the photo (features of a CNN can; a latent can't).
    supports_regions: bool = False

    def store_dir(self, catalog: Catalog) -> Path:
        """``CATALOG/stores/<name>``."""
        return catalog.root / "stores" / self.name

    def model_dir(self, catalog: Catalog) -> Path:
        """``CATALOG/models/<name>`` (unused by approaches that learn nothing)."""
        return catalog.root / "models" / self.name

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        """A display label naming the model a store was really built with."""
        return self.title

    def not_built_reason(self, catalog: Catalog) -> str:
        """Why there is no store yet, in plain words (no shell commands: browsers read it)."""
        return "not built yet for this catalogue"

    def load_model(self, catalog: Catalog, manifest: dict[str, Any], model_of: Callable[[str], Any]):
        """The model that embeds queries for the store described by ``manifest``.

        Args:
            catalog: The catalogue.
            manifest: The store's manifest.
            model_of: Gives the (cached) model of another approach, for approaches built on one.

        Raises:
            ArtifactError: The model is missing, damaged or not the one the store was built with.
        """
        raise NotImplementedError

    def build(self, catalog: Catalog, settings: BuildSettings, *, log: Log,
              progress: ProgressFactory) -> None:
        """Makes the approach's model (if any) and store, redoing only what is stale."""
        raise NotImplementedError

    def region_vectors(self, model, vectors: np.ndarray) -> np.ndarray:
        """Maps region vectors (pretrained-feature space, ``(R, 1280)``) into this store's space."""
        return vectors

    def evaluate(self, embeddings_of: Callable[[str], np.ndarray], labels: np.ndarray, k: int,
                 metric: str, curve_k: int = 0) -> dict[str, Any]:
        """Leave-one-out retrieval scores of this approach's store (see :mod:`imgsim.evaluate`).

        Args:
            embeddings_of: Gives the store embeddings of an approach by name.
            labels: ``(N,)`` label per item; empty labels are not queries.
            k: Depth.
            metric: The store's metric.
            curve_k: Also return precision@1..curve_k.
        """
        from imgsim.evaluate import evaluate_embeddings

        return evaluate_embeddings(embeddings_of(self.name), labels, k, metric, curve_k=curve_k)


def ensure_store(approach: str, catalog: Catalog, model, log: Log, progress: Progress = silent) -> None:
    """Builds ``approach``'s store with ``model`` unless it is current (reusing unchanged rows)."""
    from imgsim.storage.stores import build_store, is_current, model_spec

    if is_current(catalog, approach, model_spec(approach, model)):
        log(f"{approach}: store up to date")
    else:
        store = build_store(catalog, approach, model, progress=progress)
        reused = store.manifest.get("reused_rows", 0)
        log(f"{approach}: indexed {len(catalog.ok)} items with {model.name}"
            + (f" ({reused} unchanged rows reused)" if reused else ""))


class Pretrained(Approach):
    """Average-pooled features of an ImageNet-pretrained CNN."""

    name = PRETRAINED
    title = "Pretrained CNN"
    supports_regions = True

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        model = pretty_model((manifest or {}).get("model", "efficientnet_lite0"))
        return f"Pretrained CNN ({model})"

    def load_model(self, catalog, manifest, model_of):
        from imgsim.approaches.features import ExtractorOptions, load_extractor

        return load_extractor(manifest["model"], ExtractorOptions(**manifest["options"]))

    def build(self, catalog, settings, *, log, progress):
        from imgsim.approaches.features import load_extractor

        model = load_extractor(settings.extractor, settings.extractor_options)
        ensure_store(self.name, catalog, model, log, progress(self.name))


class AutoencoderApproach(Approach):
    """The latent space of a convolutional autoencoder trained on the catalogue itself."""

    name = AUTOENCODER
    title = "Autoencoder latent space"

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        options = (manifest or {}).get("options") or {}
        detail = " ".join(str(v) for v in (options.get("variant"), options.get("mode")) if v)
        return f"Autoencoder latent space ({detail})" if detail else self.title

    def load_model(self, catalog, manifest, model_of):
        from imgsim.approaches.autoencoder import Autoencoder

        return Autoencoder.load(self.model_dir(catalog))

    def trained_model(self, catalog: Catalog, config) -> Any | None:
        """The saved autoencoder if it was trained with ``config`` (any config if None), else None.

        A catalogue that gained or lost items keeps its model: new items are embedded with it,
        and ``python -m imgsim train`` retrains on demand (``info`` says when it has drifted).
        """
        from imgsim.approaches.autoencoder import Autoencoder

        try:
            model = Autoencoder.load(self.model_dir(catalog))
        except (ArtifactError, OSError, ValueError):
            return None
        return model if config is None or model.manifest.get("config") == config.as_dict() else None

    def train(self, catalog: Catalog, config, *, log: Log, progress: ProgressFactory):
        """Trains the autoencoder on every ingested item and writes its model directory."""
        from imgsim.approaches.autoencoder import train

        images = load_squares(catalog, config.image_size, progress("decode"))
        model = train(images, self.model_dir(catalog), config, catalog_fingerprint=catalog.fingerprint,
                      progress=progress("train"))
        m = model.manifest
        log(f"autoencoder: trained {m['epochs_trained']} epochs, val MSE {m['val_mse']:.4f} "
            f"(PSNR {m['val_psnr']:.1f} dB)")
        return model

    def build(self, catalog, settings, *, log, progress):
        model = self.trained_model(catalog, settings.autoencoder)
        if model is None and settings.autoencoder is None:
            raise NotApplicableError("no trained autoencoder to embed with; train one first")
        if model is None:
            model = self.train(catalog, settings.autoencoder, log=log, progress=progress)
        else:
            log("autoencoder: model up to date")
        ensure_store(self.name, catalog, model, log, progress(self.name))


class Tuned(Approach):
    """The pretrained features projected by shrinkage LDA fitted on the catalogue's labels."""

    name = TUNED
    title = "Catalogue-tuned CNN features"
    depends_on = (PRETRAINED,)
    supports_regions = True

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        base = pretty_model(str((manifest or {}).get("model", "tuned_efficientnet_lite0")).removeprefix("tuned_"))
        column = ((manifest or {}).get("options") or {}).get("label_column")
        return f"Catalogue-tuned {base}" + (f" (on {column!r})" if column else "")

    def label_column(self, catalog: Catalog, requested: str | None) -> str:
        """The column to tune on: the one asked for, else ``label``, else ``category``.

        Raises:
            NotApplicableError: No candidate column has 2 labels with 2 or more items each.
        """
        from imgsim.approaches.tuned import usable_labels

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

    def region_vectors(self, model, vectors):
        """The tuned projection of the region vectors."""
        return model.projection.apply(vectors)

    def evaluate(self, embeddings_of, labels, k, metric, curve_k=0):
        """Scored only on items whose labels were held out of the projection they are ranked in."""
        from imgsim.approaches.tuned import cross_validated_scores

        return cross_validated_scores(embeddings_of(PRETRAINED), labels, k, curve_k=curve_k)

    def load_model(self, catalog, manifest, model_of):
        from imgsim.approaches.tuned import TunedExtractor

        return TunedExtractor.load(self.model_dir(catalog), model_of(PRETRAINED))

    def _base(self, catalog: Catalog):
        """The pretrained store and its model, which the projection applies to."""
        from imgsim.storage.stores import Store

        pretrained = APPROACHES[PRETRAINED]
        store = Store.load(pretrained.store_dir(catalog), catalog)
        return store, pretrained.load_model(catalog, store.manifest, lambda name: None)

    def build(self, catalog, settings, *, log, progress):
        from imgsim.approaches.tuned import TunedExtractor
        from imgsim.storage.stores import is_current, model_spec, write_store

        column = self.label_column(catalog, settings.label_column)
        base_store, base = self._base(catalog)
        try:
            current = TunedExtractor.load(self.model_dir(catalog), base)
        except ArtifactError:
            current = None
        if current is None or current.manifest["label_column"] != column:
            self.refit(catalog, settings, log=log)
        elif is_current(catalog, self.name, model_spec(self.name, current)):
            log("tuned: projection and store up to date")
        else:
            # The catalogue changed: project its items with the fitted projection; refitting is
            # on demand (`python -m imgsim train CATALOG --approach tuned`), as for the autoencoder.
            write_store(catalog, self.name, current, current.projection.apply(np.asarray(base_store.embeddings)))
            log(f"tuned: projected {len(catalog.ok)} items with the projection fitted on "
                f"{current.manifest['fitted_items']} items")

    def refit(self, catalog: Catalog, settings: BuildSettings, *, log: Log) -> None:
        """Fits the projection on the catalogue's labels as they are now; writes model and store."""
        from imgsim.approaches.tuned import TunedExtractor, fit_projection, save_projection, usable_labels
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


def load_squares(catalog: Catalog, size: int, progress: Progress = silent) -> np.ndarray:
    """All ingested items as ``(N, size, size, 3)`` uint8 squares, decoded once."""
    from imgsim.storage.stores import iter_batches

    paths = catalog.thumb_paths()
    out = np.empty((len(paths), size, size, 3), np.uint8)
    done = 0
    for batch in iter_batches(paths, size, 64):
        out[done:done + len(batch)] = batch
        done += len(batch)
        progress(done, len(paths), "decoding")
    return out


#: Every approach, in the order the app shows them and the build runs them.
APPROACHES: dict[str, Approach] = {a.name: a for a in (Pretrained(), AutoencoderApproach(), Tuned())}


def get(name: str) -> Approach:
    """The approach called ``name``.

    Raises:
        ValueError: No such approach.
    """
    try:
        return APPROACHES[name]
    except KeyError:
        raise ValueError(f"`approach` must be one of {', '.join(APPROACHES)}. Received: {name!r}") from None


def names() -> list[str]:
    """Every approach's name, in order."""
    return list(APPROACHES)


def with_dependencies(requested: tuple[str, ...] | list[str]) -> list[str]:
    """``requested`` plus what it depends on, in build order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        for dep in get(name).depends_on:
            add(dep)
        wanted.add(name)

    for name in requested:
        add(name)
    return [n for n in APPROACHES if n in wanted]
