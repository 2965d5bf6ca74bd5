"""The autoencoder approach: the latent space of a convolutional autoencoder trained on the catalogue."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.approaches.autoencoder.nets import AutoencoderConfig, Mode
from imgsim.approaches.base import Approach, Drift, NotApplicableError, added_since, ensure_store, load_squares
from imgsim.ingest.catalog import Catalog
from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactError, read_manifest, remove_artifact

AUTOENCODER = "autoencoder"
#: At most this many new items are reconstructed to measure drift (their mean is stable by then).
DRIFT_SAMPLE = 2000


class AutoencoderApproach(Approach):
    """The latent space of a convolutional autoencoder trained on the catalogue itself."""

    name = AUTOENCODER
    title = "Autoencoder latent space"
    settings_type = AutoencoderConfig
    learns = True
    reconstructs = True

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        options = (manifest or {}).get("options") or {}
        detail = " ".join(str(v) for v in (options.get("variant"), options.get("mode")) if v)
        return f"Autoencoder latent space ({detail})" if detail else self.title

    def settings_from_manifest(self, catalog: Catalog) -> AutoencoderConfig | None:
        """The configuration the saved model was trained with; None without a readable model."""
        try:
            return AutoencoderConfig.from_manifest(read_manifest(self.model_dir(catalog))["config"])
        except (ArtifactError, OSError, KeyError, TypeError, ValueError):
            return None

    def load_model(self, catalog, manifest, model_of):
        from imgsim.approaches.autoencoder.nets import Autoencoder

        return Autoencoder.load(self.model_dir(catalog))

    def trained_model(self, catalog: Catalog, config: AutoencoderConfig | None) -> Any | None:
        """The saved autoencoder if it was trained with ``config`` (any config if None), else None.

        A catalogue that gained or lost items keeps its model: new items are embedded with it,
        and retraining is on demand (:meth:`drift` says when it is due).
        """
        from imgsim.approaches.autoencoder.nets import Autoencoder

        try:
            model = Autoencoder.load(self.model_dir(catalog))
        except (ArtifactError, OSError, ValueError):
            return None
        return model if config is None or model.manifest.get("config") == config.as_dict() else None

    def plain_dir(self, catalog: Catalog) -> Path:
        """Where the ``plain`` model trained beside a robust one lives (``plain_beside``)."""
        return layout.model_dir(catalog.root, f"{self.name}_plain")

    def plain_model(self, catalog: Catalog) -> Any | None:
        """The ``plain`` model beside the searched robust one, if one was trained, else None."""
        from imgsim.approaches.autoencoder.nets import Autoencoder

        try:
            return Autoencoder.load(self.plain_dir(catalog))
        except (ArtifactError, OSError, ValueError):
            return None

    def train(self, catalog: Catalog, config: AutoencoderConfig, *, log, progress):
        """Trains the autoencoder on every ingested item and writes its model directory."""
        from imgsim.approaches.autoencoder.training import train

        images = load_squares(catalog, config.image_size, progress("decode"))
        model = train(images, self.model_dir(catalog), config, catalog_fingerprint=catalog.fingerprint,
                      progress=progress("train"))
        m = model.manifest
        log(f"autoencoder: trained {m['epochs_trained']} epochs, val MSE {m['val_mse']:.4f} "
            f"(PSNR {m['val_psnr']:.1f} dB)")
        self._train_plain_beside(catalog, config, images, log=log, progress=progress)
        return model

    def _train_plain_beside(self, catalog: Catalog, config: AutoencoderConfig, images: np.ndarray | None = None,
                            *, log, progress) -> None:
        """Trains the comparison ``plain`` model when ``config`` asks for one (and removes a stale one)."""
        from imgsim.approaches.autoencoder.training import train

        if not (config.plain_beside and config.mode is Mode.ROBUST):
            remove_artifact(self.plain_dir(catalog))  # it would compare with another model
            return
        if images is None:
            images = load_squares(catalog, config.image_size, progress("decode"))
        plain = dataclasses.replace(config, mode=Mode.PLAIN, plain_beside=False)
        model = train(images, self.plain_dir(catalog), plain, catalog_fingerprint=catalog.fingerprint,
                      progress=progress("train plain"))
        log(f"autoencoder: trained the plain model beside it, val PSNR {model.manifest['val_psnr']:.1f} dB")

    def build(self, catalog, settings: AutoencoderConfig, *, log, progress, learn=True):
        model = self.trained_model(catalog, settings if learn else None)
        if model is None and not learn:
            raise NotApplicableError("no trained autoencoder to embed with; train one first")
        if model is None:
            from imgsim.approaches.autoencoder.training import MIN_IMAGES

            if len(catalog.ok) < MIN_IMAGES:  # a shop starting with a photo or two still gets searched
                raise NotApplicableError(f"training needs at least {MIN_IMAGES} images and the catalogue has "
                                         f"{len(catalog.ok)}; add more and rebuild")
            model = self.train(catalog, settings, log=log, progress=progress)
        else:
            log("autoencoder: model up to date")
            plain = self.plain_model(catalog)
            if settings.plain_beside and (plain is None or plain.manifest.get("catalog_fingerprint")
                                          != model.manifest.get("catalog_fingerprint")):
                self._train_plain_beside(catalog, settings, log=log, progress=progress)
        ensure_store(self.name, catalog, model, log, progress(self.name))

    def retrain(self, catalog, settings: AutoencoderConfig, *, log, progress) -> None:
        model = self.train(catalog, settings, log=log, progress=progress)
        ensure_store(self.name, catalog, model, log, progress(self.name))

    def drift(self, catalog, model, *, retrain_ratio=1.5, retrain_share=0.2) -> Drift:
        """Items added since training, and how their reconstruction error compares with validation's."""
        from imgsim.storage.stores import iter_batches

        trained = str(model.manifest.get("created", ""))
        rows = added_since(catalog, trained)
        total = len(catalog.ok)
        line = f"autoencoder: {len(rows)} of {total} items added since it was trained ({trained})"
        due = False
        if len(rows):
            paths = [catalog.thumb_paths()[r] for r in rows[:DRIFT_SAMPLE]]
            mse = float(np.concatenate([model.errors(b)[1] for b in
                                        iter_batches(paths, model.image_size, 64)]).mean())
            ratio = mse / max(float(model.manifest["val_mse"]), 1e-12)
            line += f"; their reconstruction MSE {mse:.4f} is {ratio:.1f}x the validation MSE"
            due = ratio > retrain_ratio or len(rows) > retrain_share * total
            if due:
                line += "; retraining is advised"
        return Drift(self.name, line, due)
