"""Training an autoencoder on a catalogue, resumably.

Training checkpoints after every epoch into a work directory beside the model (weights,
optimizer state and the plateau/early-stopping state as checksummed ``.npz``/JSON, swapped in
atomically): an interrupted run resumes to the same weights as an uninterrupted one, and a
damaged checkpoint is discarded rather than crashing the next build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.approaches.autoencoder import contrastive
from imgsim.approaches.autoencoder.compositor import Compositor
from imgsim.approaches.autoencoder.nets import (
    FORMAT_VERSION,
    KIND,
    MODEL_FILE,
    Autoencoder,
    AutoencoderConfig,
    Mode,
    build,
    psnr,
)
from imgsim.approaches.features import _keras
from imgsim.errors import ImgsimError
from imgsim.progress import Progress, silent
from imgsim.storage.artifacts import (
    ArtifactError,
    atomic_directory,
    library_versions,
    now_iso,
    read_manifest,
    sha256_file,
    write_json_atomic,
)

DEFAULT_CONFIG = AutoencoderConfig()
#: Fewest images an autoencoder is trained on: one or more is held out for validation, the rest fit.
MIN_IMAGES = 4
WORK_FORMAT = 1  # the layout of the resumable work directory below
CHECKPOINT = "checkpoint"


class CheckpointError(ImgsimError, RuntimeError):
    """A training checkpoint is unusable (partly written, damaged, or from another run)."""


@dataclasses.dataclass
class _TrainingState:
    """Everything besides the weights that decides how training continues after an epoch.

    The learning-rate-on-plateau and early-stopping policies live here (rather than in Keras
    callbacks, whose state a checkpoint cannot carry) so a resumed run continues exactly where
    the interrupted one stopped.
    """

    epochs_done: int = 0
    learning_rate: float = 1e-3
    history: list[float] = dataclasses.field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0  # 1-based; 0 before the first epoch
    wait: int = 0
    plateau_best: float | None = None
    plateau_wait: int = 0
    stopped_early: bool = False

    # Small catalogues give short, noisy epochs: halve the step size on a plateau before giving
    # up, so early stopping ends a descent rather than a wobble.
    PLATEAU_PATIENCE = 2
    PLATEAU_FACTOR = 0.5
    PLATEAU_MIN_DELTA = 1e-4
    MIN_LEARNING_RATE = 1e-5

    def update(self, val_loss: float, patience: int) -> bool:
        """Records one finished epoch; returns whether it is the best so far."""
        self.epochs_done += 1
        self.history.append(val_loss)
        improved = self.best is None or val_loss < self.best
        if improved:
            self.best, self.best_epoch, self.wait = val_loss, self.epochs_done, 0
        else:
            self.wait += 1
            self.stopped_early = self.wait >= patience
        if self.plateau_best is None or val_loss < self.plateau_best - self.PLATEAU_MIN_DELTA:
            self.plateau_best, self.plateau_wait = val_loss, 0
        else:
            self.plateau_wait += 1
            if self.plateau_wait >= self.PLATEAU_PATIENCE and self.learning_rate > self.MIN_LEARNING_RATE:
                self.learning_rate = max(self.learning_rate * self.PLATEAU_FACTOR, self.MIN_LEARNING_RATE)
                self.plateau_wait = 0
        return improved

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fingerprint_images(images: np.ndarray) -> str:
    digest = hashlib.sha256(repr(images.shape).encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def _prepare_work(work: Path, identity: dict[str, Any]) -> None:
    """Keeps ``work`` only if it belongs to the same run (format, config, data); else empties it.

    Leftovers of an interrupted checkpoint write (``.checkpoint.tmp-*``, ``.checkpoint.old-*``)
    are removed; the committed ``checkpoint`` directory is validated later, when it is loaded.
    """
    if work.exists():
        try:
            manifest = read_manifest(work, "autoencoder_work")
        except ArtifactError:
            manifest = {}
        if {k: manifest.get(k) for k in identity} != identity:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for stray in work.glob(f".{CHECKPOINT}.*"):
        shutil.rmtree(stray, ignore_errors=True)
    write_json_atomic(work / "manifest.json", {"kind": "autoencoder_work", **identity})


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> str:
    np.savez(path, *arrays)
    return sha256_file(path)


def _load_arrays(path: Path, digest: str, like: list[np.ndarray]) -> list[np.ndarray]:
    if sha256_file(path) != digest:
        raise CheckpointError(f"{path.name} does not match its checksum")
    with np.load(path, allow_pickle=False) as npz:
        arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    if [a.shape for a in arrays] != [tuple(b.shape) for b in like]:
        raise CheckpointError(f"{path.name} holds arrays of other shapes than the model's")
    return arrays


def _save_checkpoint(work: Path, model, state: _TrainingState, best_weights: list[np.ndarray]) -> None:
    """Writes weights, optimizer state, best weights and policy state as one atomic directory.

    The files are plain ``.npz`` arrays (no pickle) with their sha256 in ``state.json``, written
    last; the directory is renamed into place, so a kill at any moment leaves either the previous
    checkpoint or this one, and a damaged file is caught by its checksum.
    """
    with atomic_directory(work / CHECKPOINT) as tmp:
        files = {
            "weights": _save_arrays(tmp / "weights.npz", model.get_weights()),
            "optimizer": _save_arrays(tmp / "optimizer.npz", [np.asarray(v) for v in model.optimizer.variables]),
        }
        if state.best_epoch != state.epochs_done:
            files["best"] = _save_arrays(tmp / "best.npz", best_weights)
        write_json_atomic(tmp / "state.json", {"state": state.as_dict(), "files": files})


def _load_checkpoint(work: Path, model) -> tuple[_TrainingState, list[np.ndarray]] | None:
    """Restores weights and optimizer state into ``model`` from ``work``'s checkpoint.

    Returns:
        ``(state, best_weights)``, or ``None`` when there is no checkpoint.

    Raises:
        CheckpointError: The checkpoint is damaged or does not fit the model.
    """
    root = work / CHECKPOINT
    if not root.exists():
        return None
    try:
        saved = json.loads((root / "state.json").read_text("utf-8"))
        state = _TrainingState(**saved["state"])
        files = saved["files"]
        weights = _load_arrays(root / "weights.npz", files["weights"], model.get_weights())
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        opt_values = _load_arrays(root / "optimizer.npz", files["optimizer"], optimizer.variables)
        best = _load_arrays(root / "best.npz", files["best"], weights) if "best" in files else weights
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{type(err).__name__}: {err}") from err
    model.set_weights(weights)
    for variable, value in zip(optimizer.variables, opt_values, strict=True):
        variable.assign(value)
    return state, best


class _Batches:
    """One epoch of ``(inputs, targets)`` batches, built lazily as a ``keras.utils.PyDataset``.

    Batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, so an epoch replays exactly
    after a resume and the batches can be made in worker threads.
    """

    @staticmethod
    def make(order: np.ndarray, batch_size: int, make_batch, seed: tuple[int, ...], workers: int = 1):
        keras = _keras()

        class Batches(keras.utils.PyDataset):
            def __len__(self) -> int:
                return math.ceil(len(order) / batch_size)

            def __getitem__(self, index: int):
                rows = order[index * batch_size:(index + 1) * batch_size]
                return make_batch(rows, np.random.default_rng([*seed, index]))

        return Batches(workers=workers, use_multiprocessing=False)


def _photo_rank1(model, photos: np.ndarray, studio: np.ndarray) -> float:
    """The share of ``photos`` whose nearest studio latent (cosine) is their own item's."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    encoder = model.get_layer("encoder")
    scores = unit(encoder.predict(photos, batch_size=64, verbose=0)) @ unit(
        encoder.predict(studio, batch_size=64, verbose=0)).T
    return float((scores.argmax(axis=1) == np.arange(len(photos))).mean())


def train(
    images: np.ndarray,
    out: str | os.PathLike,
    config: AutoencoderConfig = DEFAULT_CONFIG,
    *,
    catalog_fingerprint: str = "",
    progress: Progress = silent,
    verbose: int = 0,
) -> Autoencoder:
    """Trains an autoencoder on ``images`` and saves it to ``out`` atomically.

    ``plain`` fits the autoencoder itself; ``robust`` fits the two-input graph of
    :func:`imgsim.approaches.autoencoder.contrastive.trainer` over the same encoder and decoder
    (reconstructions plus the retrieval term). One Keras ``fit`` per epoch over that epoch's
    batches (shuffled from ``(seed, epoch)``), a fixed-seed validation split, halving of the
    learning rate on plateaus, and early stopping that keeps the best weights. After every epoch the weights, the optimizer's state and the policies'
    state are checkpointed atomically in ``out``'s sibling work directory ``.<name>.work``, so
    an interrupted run resumes where it stopped and ends with the same weights as an
    uninterrupted one. A checkpoint that is damaged, partly written, or from another
    configuration or data set is discarded and training starts clean; the manifest says which
    happened (``resumed_from_epoch``, ``checkpoint_discarded``).

    Args:
        images: ``(N, S, S, 3)`` uint8 with ``S == config.image_size``, N >= :data:`MIN_IMAGES`.
        out: The model directory to write.
        config: Architecture and training settings.
        catalog_fingerprint: Recorded in the manifest (which catalogue state it was trained on).
        progress: Called after each epoch (after its checkpoint is written).
        verbose: Keras' ``fit`` verbosity (1 draws its progress bar).

    Returns:
        The trained, saved :class:`Autoencoder`.

    Raises:
        ValueError: ``images`` has the wrong shape or fewer than 4 items.
    """
    keras = _keras()

    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (config.image_size, config.image_size, 3):
        raise ValueError(f"`images` must have shape (N, {config.image_size}, {config.image_size}, 3). "
                         f"Received: images.shape={images.shape}")
    if len(images) < MIN_IMAGES:
        raise ValueError(f"`images` must hold at least {MIN_IMAGES} images. Received: {len(images)}")
    out = Path(out)
    work = out.with_name(f".{out.name}.work")
    _prepare_work(work, {"work_format": WORK_FORMAT, "config": config.as_dict(),
                         "data": _fingerprint_images(images)})

    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(images))
    n_val = max(1, int(round(len(images) * config.validation_split)))
    val_x, train_x = images[order[:n_val]], images[order[n_val:]]
    val_targets = val_x.astype(np.float32) / 255.0
    if config.mode is Mode.ROBUST:
        compositor = Compositor(train_x, config.seed, config.composite_scale)
        val_compositor = Compositor(val_x, config.seed, config.composite_scale, compositor.scenes)

        def make_batch(rows: np.ndarray, rng: np.random.Generator):
            photos = compositor.inputs(rows, rng, config.clean_fraction, config.box_fraction)
            return contrastive.inputs(train_x[rows], photos), contrastive.targets(train_x[rows])

        val_photos = val_compositor.inputs(np.arange(len(val_x)), np.random.default_rng([config.seed, 1]),
                                           config.clean_fraction, config.box_fraction)
        validation = (contrastive.inputs(val_x, val_photos), contrastive.targets(val_x))
    else:
        def make_batch(rows: np.ndarray, rng: np.random.Generator):
            return train_x[rows], train_x[rows].astype(np.float32) / 255.0

        validation = (val_x, val_targets)

    def fresh_model():
        """``(autoencoder, the model fit trains)``: the same one for ``plain``."""
        keras.utils.set_random_seed(config.seed)  # the same initial weights in every run
        model, _, _ = build(config)
        if config.mode is Mode.ROBUST:
            return model, contrastive.trainer(model, config)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
        return model, model

    model, fitted = fresh_model()
    monitor = f"val_{contrastive.STUDIO_OUT}_loss" if config.mode is Mode.ROBUST else "val_loss"
    resumed_from, discarded = None, None
    try:
        restored = _load_checkpoint(work, fitted)
    except CheckpointError as err:
        discarded = str(err)
        shutil.rmtree(work / CHECKPOINT, ignore_errors=True)
        (model, fitted), restored = fresh_model(), None  # as if the checkpoint never was
    if restored is None:
        state, best_weights = _TrainingState(learning_rate=config.learning_rate), fitted.get_weights()
    else:
        state, best_weights = restored
        resumed_from = state.epochs_done

    while state.epochs_done < config.epochs and not state.stopped_early:
        epoch = state.epochs_done
        fitted.optimizer.learning_rate = state.learning_rate
        shuffled = np.random.default_rng([config.seed, 0, epoch]).permutation(len(train_x))
        batches = _Batches.make(shuffled, config.batch_size, make_batch, (config.seed, 0, epoch))
        history = fitted.fit(batches, validation_data=validation, validation_batch_size=64,
                             initial_epoch=epoch, epochs=epoch + 1, verbose=verbose, shuffle=False)
        # A robust model stops on its studio reconstructions (what a user browses): its total
        # validation loss carries the retrieval term over small batches, noisy enough to stop early.
        val_loss = float(history.history[monitor][-1])
        if state.update(val_loss, config.patience):
            best_weights = fitted.get_weights()
        _save_checkpoint(work, fitted, state, best_weights)
        progress(state.epochs_done, config.epochs, f"epoch {state.epochs_done}: val_loss {val_loss:.4f}")

    fitted.set_weights(best_weights)
    recon = model.predict(val_x, batch_size=64, verbose=0)
    val_mse = float(((recon - val_targets) ** 2).mean())
    photo_mse = photo_rank1 = None
    if config.mode is Mode.ROBUST:  # the studio image imagined from a phone photo, every input a photo
        photos = val_compositor.inputs(np.arange(len(val_x)), np.random.default_rng([config.seed, 3]), 0.0)
        photo_mse = float(((model.predict(photos, batch_size=64, verbose=0) - val_targets) ** 2).mean())
        photo_rank1 = _photo_rank1(model, photos, val_x)
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "config": config.as_dict(),
        "parameters": int(model.count_params()),
        "epochs_trained": state.epochs_done,
        "best_epoch": state.best_epoch,
        "stopped_early": state.stopped_early,
        "resumed_from_epoch": resumed_from,
        "checkpoint_discarded": discarded,
        "val_loss_history": state.history,
        "val_loss_monitored": monitor,  # robust: the studio reconstructions' loss, not the total
        "val_mse": val_mse,
        "val_psnr": float(psnr(val_mse)),
        "val_photo_mse": photo_mse,
        "val_photo_rank1": photo_rank1,
        "train_items": int(len(train_x)),
        "val_items": int(n_val),
        "catalog_fingerprint": catalog_fingerprint,
        "created": now_iso(),
        "library_versions": library_versions(),
    }
    with atomic_directory(out) as tmp:
        model.save(tmp / MODEL_FILE)
        manifest["fingerprint"] = sha256_file(tmp / MODEL_FILE)
        write_json_atomic(tmp / "manifest.json", manifest)
    shutil.rmtree(work, ignore_errors=True)
    return Autoencoder.load(out)
