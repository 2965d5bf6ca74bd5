"""Convolutional autoencoders trained on a catalogue: their latent space is a search index.

Two variants:

- ``seed``: the original article's model, faithfully, bug included. Its third ``Conv2D`` takes the
  input image instead of the previous layer, so the first two convolutions are dead (Keras drops
  them from the graph); nothing downsamples, so the two Dense layers around the 16-d latent hold
  almost all of its 138.5 million parameters at 256x256.
- ``conv`` (default): stride-2 convolutions down to a 4x4 map, a Dense latent, a mirrored decoder
  of transposed convolutions and a sigmoid output. About 1.8 million parameters at 64x64; it trains
  several times faster per epoch than ``seed`` at the same size and retrieves better.

Two training modes (:class:`Mode`): ``plain`` reproduces each catalogue image from itself;
``robust`` reproduces it from a simulated phone photo of it (:class:`Compositor`, made fresh and
seeded every epoch), so the latent of a shopper's photo lands near its studio image's.

Layers are named after what they are (``latent``, ``decoder_out``); the encoder and decoder are
models of their own, nested in the autoencoder, and the whole thing saves as one ``.keras`` file
beside a ``manifest.json``. Inputs are uint8 RGB; scaling to [0, 1] is a layer of the model.

Training checkpoints after every epoch into a work directory beside the model (weights,
optimizer state and the plateau/early-stopping state as checksummed ``.npz``/JSON, swapped in
atomically): an interrupted run resumes to the same weights as an uninterrupted one, and a
damaged checkpoint is discarded rather than crashing the next build.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

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

KIND = "autoencoder"
FORMAT_VERSION = 2  # 2: the conv decoder narrows as it upsamples
MODEL_FILE = "autoencoder.keras"


class Variant(enum.StrEnum):
    """Which architecture."""

    SEED = "seed"
    CONV = "conv"


class Mode(enum.StrEnum):
    """What the autoencoder is trained to reproduce.

    ``plain``: each catalogue image from itself. ``robust``: each catalogue image from a
    simulated phone photo of it (:mod:`imgsim.phonesim`: cut out, tilted, relit, on a random
    scene), so the latent learns to ignore the scene; a share of inputs stays clean so
    catalogue photos still map to themselves.

    ``robust`` is the default, by ``benchmarks/autoencoder.py --phone`` (3,000 myntra_eval items,
    64 px, 20 epochs, 200 simulated 12 MP photos): with half the composites cropped to the
    product's box, a photo cropped to the app's automatic box finds its product in the top 10
    0.245 of the time (plain: 0.04) with label precision@10 0.353 (plain: 0.114); for the
    catalogue's own photos precision@10 falls from 0.616 to 0.585, and reconstructions of
    catalogue images are blurrier (MSE 0.016 against 0.006).
    """

    PLAIN = "plain"
    ROBUST = "robust"


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture and training settings.

    Attributes:
        variant: ``conv`` (default) or ``seed`` (the article's model).
        image_size: Input side in pixels; for ``conv`` a power of two >= 16.
        latent_dim: Size of the latent vector; by default 16 for ``seed`` (the article's) and 128
            for ``conv``.
        base_filters: Filters of the first ``conv`` stage, doubled per stage up to 8x.
        epochs: Upper bound on epochs; early stopping usually ends sooner.
        batch_size: Images per step.
        learning_rate: Adam's learning rate.
        validation_split: Fraction of items held out for validation.
        patience: Epochs without validation improvement before stopping.
        seed: Seeds the split, shuffling, weight initialisation and (robust) the composites.
        mode: ``robust`` (default: phone-photo composite -> studio image) or ``plain`` (image ->
            itself).
        clean_fraction: ``robust`` only: the share of inputs left as the clean catalogue image.
        composite_scale: ``robust`` only: composites are made with their longer side this many
            times ``image_size``, then made square and resized like a query photo.
        box_fraction: ``robust`` only: the share of composites cropped to the product's box (with
            a random margin), as a query cropped to the app's automatic or the user's box is.
    """

    variant: Variant = Variant.CONV
    image_size: int = 64
    latent_dim: int | None = None
    base_filters: int = 32
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    validation_split: float = 0.1
    patience: int = 5
    seed: int = 1337
    mode: Mode = Mode.ROBUST
    clean_fraction: float = 0.25
    composite_scale: float = 1.5
    box_fraction: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", Variant(self.variant))
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.latent_dim is None:
            object.__setattr__(self, "latent_dim", 16 if self.variant is Variant.SEED else 128)
        if self.image_size < 16:
            raise ValueError(f"`image_size` must be >= 16. Received: image_size={self.image_size}")
        if self.variant is Variant.CONV and self.image_size & (self.image_size - 1):
            raise ValueError(
                f"`image_size` must be a power of two for the conv variant. Received: {self.image_size}"
            )
        if self.latent_dim < 2:
            raise ValueError(f"`latent_dim` must be >= 2. Received: latent_dim={self.latent_dim}")
        if self.epochs < 1:
            raise ValueError(f"`epochs` must be >= 1. Received: epochs={self.epochs}")
        if not 0.0 < self.validation_split < 0.5:
            raise ValueError(
                f"`validation_split` must be in (0, 0.5). Received: {self.validation_split}"
            )
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ValueError(
                f"`clean_fraction` must be in [0, 1). Received: clean_fraction={self.clean_fraction}"
            )
        if not 0.0 <= self.box_fraction <= 1.0:
            raise ValueError(f"`box_fraction` must be in [0, 1]. Received: box_fraction={self.box_fraction}")
        if not 1.0 <= self.composite_scale <= 4.0:
            raise ValueError(
                f"`composite_scale` must be in [1, 4]. Received: composite_scale={self.composite_scale}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, for manifests."""
        return {**dataclasses.asdict(self), "variant": self.variant.value, "mode": self.mode.value}


def build_seed(image_size: int = 256, latent_dim: int = 16):
    """The article's autoencoder, dead branch included.

    Returns:
        ``(autoencoder, encoder, decoder)`` functional Keras models.
    """
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x0 = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Conv2D(32, 3, padding="same", name="conv1")(x0)
    x = layers.BatchNormalization(name="bn1")(layers.LeakyReLU(name="lrelu1")(x))
    x = layers.Conv2D(64, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(layers.LeakyReLU(name="lrelu2")(x))
    # The article's bug, kept on purpose: conv3 reads the input, not x, so conv1/conv2 are dead.
    x = layers.Conv2D(64, 3, padding="same", name="conv3")(x0)
    x = layers.BatchNormalization(name="bn3")(layers.LeakyReLU(name="lrelu3")(x))
    latent = layers.Dense(latent_dim, name="latent")(layers.Flatten(name="flatten")(x))
    encoder = keras.Model(inputs, latent, name="encoder")

    code = keras.Input((latent_dim,), name="code")
    y = layers.Dense(image_size * image_size * 64, name="decoder_dense")(code)
    y = layers.Reshape((image_size, image_size, 64), name="reshape")(y)
    for i, filters in enumerate((64, 64, 32)):
        y = layers.Conv2DTranspose(filters, 3, padding="same", name=f"deconv{i + 1}")(y)
        y = layers.BatchNormalization(name=f"dbn{i + 1}")(layers.LeakyReLU(name=f"dlrelu{i + 1}")(y))
    y = layers.Conv2DTranspose(3, 3, padding="same", name="deconv_out")(y)
    outputs = layers.Activation("sigmoid", name="decoder_out")(y)
    decoder = keras.Model(code, outputs, name="decoder")
    return _assemble(keras, encoder, decoder, "seed_autoencoder")


def build_conv(image_size: int = 64, latent_dim: int = 128, base_filters: int = 32):
    """The default autoencoder: strided convolutions down to 4x4, then a mirrored decoder.

    Returns:
        ``(autoencoder, encoder, decoder)`` functional Keras models.
    """
    keras = _keras()
    layers = keras.layers
    stages = int(math.log2(image_size // 4))
    filters = [min(base_filters * 2**i, base_filters * 8) for i in range(stages)]
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False, name=f"down{i + 1}_conv")(x)
        x = layers.ReLU(name=f"down{i + 1}_relu")(layers.BatchNormalization(momentum=0.9, name=f"down{i + 1}_bn")(x))
    latent = layers.Dense(latent_dim, name="latent")(layers.Flatten(name="flatten")(x))
    encoder = keras.Model(inputs, latent, name="encoder")

    code = keras.Input((latent_dim,), name="code")
    y = layers.Dense(4 * 4 * filters[-1], name="decoder_dense")(code)
    y = layers.Reshape((4, 4, filters[-1]), name="reshape")(layers.ReLU(name="decoder_relu")(y))
    # Each upsampling stage halves the channels as it doubles the resolution (the encoder's
    # progression in reverse); keeping the wide channels at full resolution made the decoder
    # cost as much as the seed model.
    for i, f in enumerate([*reversed(filters[:-1]), max(filters[0] // 2, 8)]):
        y = layers.Conv2DTranspose(f, 3, strides=2, padding="same", use_bias=False, name=f"up{i + 1}_deconv")(y)
        y = layers.ReLU(name=f"up{i + 1}_relu")(layers.BatchNormalization(momentum=0.9, name=f"up{i + 1}_bn")(y))
    outputs = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="decoder_out")(y)
    decoder = keras.Model(code, outputs, name="decoder")
    return _assemble(keras, encoder, decoder, "conv_autoencoder")


def _assemble(keras, encoder, decoder, name: str):
    inputs = keras.Input(encoder.input.shape[1:], dtype="uint8", name="image")
    autoencoder = keras.Model(inputs, decoder(encoder(inputs)), name=name)
    return autoencoder, encoder, decoder


def build(config: AutoencoderConfig):
    """Builds the variant that ``config`` names: ``(autoencoder, encoder, decoder)``."""
    if config.variant is Variant.SEED:
        return build_seed(config.image_size, config.latent_dim)
    return build_conv(config.image_size, config.latent_dim, config.base_filters)


def psnr(mse: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio in dB for images in [0, 1], from their MSE."""
    return 10.0 * np.log10(1.0 / np.maximum(np.asarray(mse, dtype=np.float64), 1e-10))


class Autoencoder:
    """A trained autoencoder loaded from its directory; also an :class:`Extractor`.

    ``embed`` returns raw latent vectors (not normalised), so both cosine and euclidean search
    can be run over them.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], model) -> None:
        self.root = root
        self.manifest = manifest
        self.model = model
        self.encoder = model.get_layer("encoder")
        self.decoder = model.get_layer("decoder")
        self.name = f"autoencoder_{manifest['config']['variant']}"
        self.dim = int(manifest["config"]["latent_dim"])
        self.image_size = int(manifest["config"]["image_size"])
        self.fingerprint = manifest["fingerprint"]
        self.mode = Mode(manifest["config"].get("mode", Mode.PLAIN.value))
        self.options = {"variant": manifest["config"]["variant"], "mode": self.mode.value}

    @classmethod
    def load(cls, root: str | os.PathLike) -> Autoencoder:
        """Loads a model saved by :func:`train`.

        Raises:
            ArtifactError: Nothing there, or the file does not match its manifest.
        """
        root = Path(root)
        manifest = read_manifest(root, KIND)
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{root}: autoencoder format {manifest.get('format_version')} "
                                f"is not {FORMAT_VERSION}; retrain with: python -m imgsim train")
        if sha256_file(root / MODEL_FILE) != manifest["fingerprint"]:
            raise ArtifactError(f"{root / MODEL_FILE} does not match its manifest; retrain it")
        keras = _keras()
        model = keras.saving.load_model(root / MODEL_FILE, compile=False, safe_mode=True)
        return cls(root, manifest, model)

    def _check(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"`batch` must have shape (N, {self.image_size}, {self.image_size}, 3). "
                             f"Received: {batch.shape}")
        return batch.astype(np.uint8, copy=False)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Latent vectors: ``(N, S, S, 3)`` uint8 -> ``(N, latent_dim)`` float32."""
        batch = self._check(batch)
        if len(batch) == 0:  # BatchNorm cannot broadcast over an empty batch
            return np.zeros((0, self.dim), np.float32)
        return np.asarray(self.encoder.predict_on_batch(batch), dtype=np.float32)

    def reconstruct(self, batch: np.ndarray) -> np.ndarray:
        """Reconstructions: ``(N, S, S, 3)`` uint8 -> ``(N, S, S, 3)`` float32 in [0, 1]."""
        return np.asarray(self.model.predict_on_batch(self._check(batch)), dtype=np.float32)

    def errors(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reconstructions with per-image MSE and PSNR.

        Returns:
            ``(reconstructions (N, S, S, 3), mse (N,), psnr (N,))``, pixels in [0, 1].
        """
        recon = self.reconstruct(batch)
        target = self._check(batch).astype(np.float32) / 255.0
        mse = ((recon - target) ** 2).mean(axis=(1, 2, 3))
        return recon, mse, psnr(mse)


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
    """One epoch of ``(input, target)`` batches, built lazily as a ``keras.utils.PyDataset``.

    Batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, so an epoch replays exactly
    after a resume and the batches can be made in worker threads.
    """

    @staticmethod
    def make(images: np.ndarray, order: np.ndarray, batch_size: int, make_inputs, seed: tuple[int, ...],
             workers: int = 1):
        keras = _keras()

        class Batches(keras.utils.PyDataset):
            def __len__(self) -> int:
                return math.ceil(len(order) / batch_size)

            def __getitem__(self, index: int):
                rows = order[index * batch_size:(index + 1) * batch_size]
                inputs = make_inputs(rows, np.random.default_rng([*seed, index]))
                return inputs, images[rows].astype(np.float32) / 255.0

        return Batches(workers=workers, use_multiprocessing=False)




#: Scenes made once per training run and reused (cropped, flipped) for every composite; making
#: a scene costs more than the rest of a composite.
SCENE_BANK = 96


class Compositor:
    """Makes simulated phone photos of catalogue images at a model's input size, fast.

    Each product is cut out once (:func:`imgsim.phonesim.product_mask`); scenes come from a bank
    made once; each composite is a :func:`imgsim.phonesim.simulate_photo` of about
    ``composite_scale`` times the input side in a random phone orientation (3:4, 4:3 or square),
    then padded to a square with white and resized, as a query photo is.

    Args:
        images: ``(N, S, S, 3)`` uint8 catalogue images.
        seed: Seeds the scene bank.
        composite_scale: The composite's longer side over ``S``.
        scenes: Another compositor's scene bank to share (same ``composite_scale``).
    """

    def __init__(self, images: np.ndarray, seed: int, composite_scale: float = 1.5,
                 scenes: list[np.ndarray] | None = None) -> None:
        from imgsim.phonesim import make_scene, product_mask

        self.images = images
        self.size = images.shape[1]
        self.long = max(8, round(self.size * composite_scale))
        self.short = max(8, round(self.long * 3 / 4))
        self._masks: dict[int, np.ndarray] = {}
        self._product_mask = product_mask
        if scenes is None:
            rng = np.random.default_rng([seed, 2])
            scenes = [make_scene(rng, (self.long, self.long)) for _ in range(SCENE_BANK)]
        self.scenes = scenes

    def _rgba(self, index: int) -> np.ndarray:
        if index not in self._masks:
            alpha = (self._product_mask(self.images[index]) * 255 + 0.5).astype(np.uint8)
            self._masks[index] = np.dstack([self.images[index], alpha])
        return self._masks[index]

    def photo(self, index: int, rng: np.random.Generator, box_fraction: float = 0.0) -> np.ndarray:
        """A simulated phone photo of image ``index`` as the model sees it: ``(S, S, 3)`` uint8.

        With probability ``box_fraction`` the photo is cropped to the product's box grown by a
        random margin (0-30% of the box per side), as a query cropped to a box is.
        """
        from imgsim.ingest.images import to_square
        from imgsim.phonesim import simulate_photo

        orientation = rng.integers(3)
        w, h = ((self.short, self.long), (self.long, self.short), (self.long, self.long))[orientation]
        scene = self.scenes[rng.integers(len(self.scenes))]
        x0, y0 = rng.integers(0, self.long - w + 1), rng.integers(0, self.long - h + 1)
        scene = scene[y0:y0 + h, x0:x0 + w]
        if rng.random() < 0.5:
            scene = scene[:, ::-1]
        shot = simulate_photo(self._rgba(index), rng, size=(w, h), scene=np.ascontiguousarray(scene))
        rgb = shot.rgb
        if box_fraction and rng.random() < box_fraction:
            x0, y0, x1, y1 = shot.box
            mx, my = rng.uniform(0.0, 0.3, 2) * (x1 - x0, y1 - y0)
            rgb = rgb[max(0, int(y0 - my)):min(h, int(np.ceil(y1 + my))),
                      max(0, int(x0 - mx)):min(w, int(np.ceil(x1 + mx)))]
        return to_square(np.ascontiguousarray(rgb), self.size)

    def inputs(self, indices: np.ndarray, rng: np.random.Generator, clean_fraction: float,
               box_fraction: float = 0.0) -> np.ndarray:
        """Inputs for images ``indices``: each a composite, or with ``clean_fraction`` itself."""
        out = self.images[indices].copy()
        for j, index in enumerate(indices):
            if rng.random() >= clean_fraction:
                out[j] = self.photo(int(index), rng, box_fraction)
        return out


def train(
    images: np.ndarray,
    out: str | os.PathLike,
    config: AutoencoderConfig = AutoencoderConfig(),
    *,
    catalog_fingerprint: str = "",
    progress: Progress = silent,
    verbose: int = 0,
) -> Autoencoder:
    """Trains an autoencoder on ``images`` and saves it to ``out`` atomically.

    One Keras ``fit`` per epoch over that epoch's batches (shuffled from ``(seed, epoch)``), a
    fixed-seed validation split, halving of the learning rate on plateaus, and early stopping that
    keeps the best weights. After every epoch the weights, the optimizer's state and the policies'
    state are checkpointed atomically in ``out``'s sibling work directory ``.<name>.work``, so
    an interrupted run resumes where it stopped and ends with the same weights as an
    uninterrupted one. A checkpoint that is damaged, partly written, or from another
    configuration or data set is discarded and training starts clean; the manifest says which
    happened (``resumed_from_epoch``, ``checkpoint_discarded``).

    Args:
        images: ``(N, S, S, 3)`` uint8 with ``S == config.image_size``, N >= 4.
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
    if len(images) < 4:
        raise ValueError(f"`images` must hold at least 4 images. Received: {len(images)}")
    out = Path(out)
    work = out.with_name(f".{out.name}.work")
    _prepare_work(work, {"work_format": WORK_FORMAT, "config": config.as_dict(),
                         "data": _fingerprint_images(images)})

    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(images))
    n_val = max(1, int(round(len(images) * config.validation_split)))
    val_x, train_x = images[order[:n_val]], images[order[n_val:]]
    if config.mode is Mode.ROBUST:
        compositor = Compositor(train_x, config.seed, config.composite_scale)
        val_compositor = Compositor(val_x, config.seed, config.composite_scale, compositor.scenes)

        def make_inputs(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return compositor.inputs(rows, rng, config.clean_fraction, config.box_fraction)

        val_inputs = val_compositor.inputs(np.arange(len(val_x)), np.random.default_rng([config.seed, 1]),
                                           config.clean_fraction, config.box_fraction)
    else:
        def make_inputs(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return train_x[rows]

        val_inputs = val_x
    val_targets = val_x.astype(np.float32) / 255.0

    def fresh_model():
        keras.utils.set_random_seed(config.seed)  # the same initial weights in every run
        model, _, _ = build(config)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")
        return model

    model = fresh_model()
    resumed_from, discarded = None, None
    try:
        restored = _load_checkpoint(work, model)
    except CheckpointError as err:
        discarded = str(err)
        shutil.rmtree(work / CHECKPOINT, ignore_errors=True)
        model, restored = fresh_model(), None  # as if the checkpoint never was
    if restored is None:
        state, best_weights = _TrainingState(learning_rate=config.learning_rate), model.get_weights()
    else:
        state, best_weights = restored
        resumed_from = state.epochs_done

    while state.epochs_done < config.epochs and not state.stopped_early:
        epoch = state.epochs_done
        model.optimizer.learning_rate = state.learning_rate
        shuffled = np.random.default_rng([config.seed, 0, epoch]).permutation(len(train_x))
        batches = _Batches.make(train_x, shuffled, config.batch_size, make_inputs, (config.seed, 0, epoch))
        history = model.fit(batches, validation_data=(val_inputs, val_targets), validation_batch_size=64,
                            initial_epoch=epoch, epochs=epoch + 1, verbose=verbose, shuffle=False)
        val_loss = float(history.history["val_loss"][-1])
        if state.update(val_loss, config.patience):
            best_weights = model.get_weights()
        _save_checkpoint(work, model, state, best_weights)
        progress(state.epochs_done, config.epochs, f"epoch {state.epochs_done}: val_loss {val_loss:.4f}")

    model.set_weights(best_weights)
    recon = model.predict(val_x, batch_size=64, verbose=0)
    val_mse = float(((recon - val_targets) ** 2).mean())
    photo_mse = None
    if config.mode is Mode.ROBUST:  # the studio image imagined from a phone photo, every input a photo
        photos = val_compositor.inputs(np.arange(len(val_x)), np.random.default_rng([config.seed, 3]), 0.0)
        photo_mse = float(((model.predict(photos, batch_size=64, verbose=0) - val_targets) ** 2).mean())
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
        "val_mse": val_mse,
        "val_psnr": float(psnr(val_mse)),
        "val_photo_mse": photo_mse,
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
