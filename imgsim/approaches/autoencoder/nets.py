"""Convolutional autoencoders trained on a catalogue: settings, architectures, the loaded model.

Two variants:

- ``seed``: the original article's model, faithfully, bug included. Its third ``Conv2D`` takes the
  input image instead of the previous layer, so the first two convolutions are dead (Keras drops
  them from the graph); nothing downsamples, so the two Dense layers around the 16-d latent hold
  almost all of its 138.5 million parameters at 256x256.
- ``conv`` (default): stride-2 convolutions down to a 4x4 map, a Dense latent, a mirrored decoder
  of transposed convolutions and a sigmoid output. About 1.8 million parameters at 64x64; it trains
  several times faster per epoch than ``seed`` at the same size and retrieves better.

Two training modes (:class:`Mode`): ``plain`` reproduces each catalogue image from itself;
``robust`` also reproduces it from a simulated phone photo of it
(:class:`imgsim.approaches.autoencoder.compositor.Compositor`, made fresh and seeded every epoch)
and pulls the photo's latent toward its studio image's with a contrastive term
(:mod:`imgsim.approaches.autoencoder.contrastive`), so a shopper's photo retrieves its product.

Layers are named after what they are (``latent``, ``decoder_out``); the encoder and decoder are
models of their own, nested in the autoencoder, and the whole thing saves as one ``.keras`` file
beside a ``manifest.json``. Inputs are uint8 RGB; scaling to [0, 1] is a layer of the model.

Training lives in :mod:`imgsim.approaches.autoencoder.training`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.approaches.features import _keras
from imgsim.storage.artifacts import ArtifactError, read_manifest, sha256_file

KIND = "autoencoder"
FORMAT_VERSION = 2  # 2: the conv decoder narrows as it upsamples
MODEL_FILE = "autoencoder.keras"


class Variant(enum.StrEnum):
    """Which architecture."""

    SEED = "seed"
    CONV = "conv"


class Mode(enum.StrEnum):
    """What the autoencoder is trained to reproduce.

    ``plain``: each catalogue image from itself. ``robust``: each catalogue image from itself
    and from a simulated phone photo of it (:mod:`imgsim.phonesim`: cut out, tilted, relit, on a
    random scene, half of them cropped to the product's box), plus a contrastive term over the
    batch that makes the photo's latent retrieve its item's (``contrastive_weight``). Redrawing
    every studio image from itself is what keeps robust reconstructions recognisable: trained on
    photos alone, the demo's robust model redrew a watermelon as a brown blob (13.9 dB).

    ``robust`` is the default: see ``benchmarks/autoencoder.py --phone`` for its numbers.
    """

    PLAIN = "plain"
    ROBUST = "robust"


#: Bounds of the whole-number settings: an image side past 512 or a latent of billions would ask
#: for more memory than any machine here has (``image_size`` 65536 tried to allocate 240 GiB).
LIMITS: dict[str, tuple[int, int]] = {
    "image_size": (16, 512),
    "latent_dim": (2, 4096),
    "base_filters": (1, 256),
    "epochs": (1, 1000),
    "batch_size": (1, 4096),
    "patience": (0, 1000),
    "seed": (0, 2**32 - 1),
}


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture and training settings.

    Attributes:
        variant: ``conv`` (default) or ``seed`` (the article's model).
        image_size: Input side in pixels; for ``conv`` a power of two >= 16.
        latent_dim: Size of the latent vector; by default 16 for ``seed`` (the article's) and 256
            for ``conv``.
        base_filters: Filters of the first ``conv`` stage, doubled per stage up to 8x.
        epochs: Upper bound on epochs; early stopping usually ends sooner.
        batch_size: Images per step.
        learning_rate: Adam's learning rate.
        validation_split: Fraction of items held out for validation.
        patience: Epochs without validation improvement before stopping (a robust model is
            judged by its studio reconstructions alone: its total loss carries the noisy retrieval
            term, and stopping on it left the demo at epoch 27-30 and 18.4 dB median PSNR).
        seed: Seeds the split, shuffling, weight initialisation and (robust) the composites.
        mode: ``robust`` (default: phone-photo composite -> studio image) or ``plain`` (image ->
            itself).
        clean_fraction: ``robust`` only: the share of photo inputs left as the clean catalogue
            image (every studio image is also redrawn from itself, whatever this share).
        composite_scale: ``robust`` only: composites are made with their longer side this many
            times ``image_size``, then made square and resized like a query photo.
        box_fraction: ``robust`` only: the share of composites cropped to the product's box (with
            a random margin), as a query cropped to the app's automatic or the user's box is.
        photo_weight: ``robust`` only: the weight of redrawing the studio image from its simulated
            photo, against 1 for redrawing it from itself.
        contrastive_weight: ``robust`` only: the weight of the retrieval term (InfoNCE over the
            batch: the L2-normalised latent of item i's simulated photo must be nearer item i's
            studio latent than any other item's, and the other way round), against 1 for
            reconstruction; 0 trains reconstruction alone.
        temperature: ``robust`` only: the InfoNCE temperature dividing the cosine similarities.
        plain_beside: ``robust`` only: also train a ``plain`` model of the same architecture,
            beside the robust one, so the Reconstructions page can show both (about doubles the
            training time; it is not searched with).
    """

    variant: Variant = Variant.CONV
    image_size: int = 32
    latent_dim: int | None = None
    base_filters: int = 64
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    validation_split: float = 0.1
    patience: int = 8
    seed: int = 1337
    mode: Mode = Mode.ROBUST
    clean_fraction: float = 0.0
    composite_scale: float = 1.5
    box_fraction: float = 0.5
    photo_weight: float = 0.25
    contrastive_weight: float = 0.05
    temperature: float = 0.1
    plain_beside: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", Variant(self.variant))
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.latent_dim is None:
            object.__setattr__(self, "latent_dim", 16 if self.variant is Variant.SEED else 256)
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"`{name}` must be a whole number in [{low}, {high}]. Received: {name}={value!r}")
        if self.variant is Variant.CONV and self.image_size & (self.image_size - 1):
            raise ValueError(
                f"`image_size` must be a power of two for the conv variant. Received: {self.image_size}"
            )
        if not (isinstance(self.learning_rate, int | float) and 0.0 < self.learning_rate <= 1.0):
            raise ValueError(f"`learning_rate` must be in (0, 1]. Received: learning_rate={self.learning_rate!r}")
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
        for name, low, high in (("photo_weight", 0.0, 100.0), ("contrastive_weight", 0.0, 100.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"`{name}` must be a number in [{low:g}, {high:g}]. Received: {name}={value!r}")
        if (isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float)
                or not 0.01 <= self.temperature <= 1.0):
            raise ValueError(f"`temperature` must be a number in [0.01, 1]. Received: temperature={self.temperature!r}")
        if not isinstance(self.plain_beside, bool):
            raise ValueError(f"`plain_beside` must be true or false. Received: plain_beside={self.plain_beside!r}")

    @classmethod
    def from_manifest(cls, saved: dict[str, Any]) -> AutoencoderConfig:
        """The configuration a saved model's manifest records, settings it predates included.

        A model trained before a setting existed was trained without it: a manifest with no
        ``contrastive_weight`` records a model with no retrieval term (0).

        Raises:
            ValueError: A recorded value is not a valid setting.
            TypeError: The manifest names a setting this version does not know.
        """
        if "contrastive_weight" not in saved:
            saved = {**saved, "contrastive_weight": 0.0}
        return cls(**saved)

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
                                f"is not {FORMAT_VERSION}; the autoencoder must be retrained")
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
