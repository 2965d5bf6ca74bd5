"""The whole build of a searchable catalogue: ingest, train, index; redoing only what is stale."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from imgsim import catalog as catalog_mod
from imgsim.artifacts import ArtifactError
from imgsim.autoencoder import Autoencoder, AutoencoderConfig, train
from imgsim.catalog import Catalog
from imgsim.download import DownloadConfig
from imgsim.engine import AUTOENCODER, AUTOENCODER_DIR, PRETRAINED, TUNED
from imgsim.features import DEFAULT_EXTRACTOR, ExtractorOptions, load_extractor
from imgsim.progress import Progress, silent
from imgsim.store import build_store, is_current, iter_batches, model_spec

ProgressFactory = Callable[[str], Progress]


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What ``build`` makes.

    Attributes:
        approaches: Any of ``pretrained``, ``autoencoder``, ``tuned``.
        extractor: The pretrained extractor's name.
        extractor_options: Pooling and flip options of the pretrained extractor.
        autoencoder: Architecture and training settings of the autoencoder.
        labels: Labels CSV for folder sources.
        label_column: Column copied into ``label`` (and fitted on by ``tuned``).
        download: Download settings for CSV sources.
    """

    approaches: tuple[str, ...] = (PRETRAINED, AUTOENCODER)
    extractor: str = DEFAULT_EXTRACTOR
    extractor_options: ExtractorOptions = ExtractorOptions()
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    labels: str | None = None
    label_column: str | None = None
    download: DownloadConfig = DownloadConfig()

    def __post_init__(self) -> None:
        unknown = set(self.approaches) - {PRETRAINED, AUTOENCODER, TUNED}
        if unknown or not self.approaches:
            raise ValueError(
                "`approaches` must be a non-empty subset of pretrained, autoencoder, tuned. "
                f"Received: {','.join(self.approaches)}"
            )


def load_squares(catalog: Catalog, size: int, progress: Progress = silent) -> np.ndarray:
    """All ingested items as ``(N, size, size, 3)`` uint8 squares, decoded once."""
    paths = catalog.thumb_paths()
    out = np.empty((len(paths), size, size, 3), np.uint8)
    done = 0
    for batch in iter_batches(paths, size, 64):
        out[done:done + len(batch)] = batch
        done += len(batch)
        progress(done, len(paths), "decoding")
    return out


def autoencoder_is_current(catalog: Catalog, config: AutoencoderConfig) -> bool:
    """Whether the catalogue's autoencoder was trained on its current items with ``config``."""
    try:
        model = Autoencoder.load(catalog.root / AUTOENCODER_DIR)
    except (ArtifactError, OSError, ValueError):
        return False
    manifest = model.manifest
    return manifest.get("catalog_fingerprint") == catalog.fingerprint and manifest.get("config") == config.as_dict()


def build(
    source: str,
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    *,
    progress: ProgressFactory = lambda stage: silent,
    log: Callable[[str], None] = lambda message: None,
) -> Catalog:
    """Ingests ``source`` into ``out`` and builds each requested approach that is missing or stale.

    Args:
        source: A folder, a Flipkart-style CSV, or ``demo``.
        out: The catalogue directory.
        options: What to build.
        progress: Gives a :class:`Progress` for each stage name.
        log: Receives one line per stage (what was done or skipped).

    Returns:
        The catalogue.
    """
    catalog = catalog_mod.ingest(
        source, out, labels=options.labels, label_column=options.label_column,
        download_config=options.download, progress=progress("ingest"),
    )
    counts = catalog.items["status"].value_counts().to_dict()
    log("ingested: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    if len(catalog.ok) == 0:
        raise catalog_mod.CatalogError(f"no image of {source} could be ingested; see the items' messages")

    def ensure_store(approach: str, model) -> None:
        if is_current(catalog, approach, model_spec(approach, model)):
            log(f"{approach}: store up to date")
        else:
            build_store(catalog, approach, model, progress=progress(approach))
            log(f"{approach}: indexed {len(catalog.ok)} items with {model.name}")

    if PRETRAINED in options.approaches or TUNED in options.approaches:
        ensure_store(PRETRAINED, load_extractor(options.extractor, options.extractor_options))

    if AUTOENCODER in options.approaches:
        config = options.autoencoder
        if autoencoder_is_current(catalog, config):
            log("autoencoder: model up to date")
        else:
            images = load_squares(catalog, config.image_size, progress("decode"))
            model = train(images, catalog.root / AUTOENCODER_DIR, config,
                          catalog_fingerprint=catalog.fingerprint, progress=progress("train"))
            log(f"autoencoder: trained {model.manifest['epochs_trained']} epochs, "
                f"val MSE {model.manifest['val_mse']:.4f} (PSNR {model.manifest['val_psnr']:.1f} dB)")
        ensure_store(AUTOENCODER, Autoencoder.load(catalog.root / AUTOENCODER_DIR))

    if TUNED in options.approaches:
        from imgsim.tuned import build_tuned

        log(build_tuned(catalog, options.label_column or catalog.label_column()))
    return catalog


def default_demo_path() -> Path:
    """Where the demo catalogue lives: ``<data dir>/catalogs/demo``."""
    return catalog_mod.default_catalog_path("demo")
