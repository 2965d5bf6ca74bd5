"""The robust autoencoder's training graph: two reconstructions and a retrieval term.

A ``robust`` autoencoder (:class:`imgsim.approaches.autoencoder.nets.Mode`) is trained on pairs:
item i's studio image and a simulated phone photo of it
(:class:`imgsim.approaches.autoencoder.compositor.Compositor`). One shared encoder reads both;
the loss is

- the studio image redrawn from itself (weight 1: what keeps reconstructions recognisable),
- the studio image redrawn from the photo (``photo_weight``: the studio picture the
  Reconstructions page imagines for a shopper's photo), and
- InfoNCE over the batch on L2-normalised latents (``contrastive_weight``, ``temperature``):
  photo i must be nearer studio i than any other studio of the batch, and studio i nearer
  photo i than any other photo, so the latent of a photo retrieves its item.

The graph is a two-input functional Keras model over the autoencoder's own ``encoder`` and
``decoder``; it only trains them. What is saved is the autoencoder itself, so the training graph's
loss layer never needs to be deserialised.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from imgsim.approaches.features import _keras

STUDIO, PHOTO = "studio", "photo"
STUDIO_OUT, PHOTO_OUT, AGREEMENT = "studio_out", "photo_out", "agreement"


@functools.cache
def _agreement_layer() -> type:
    keras = _keras()
    ops = keras.ops

    class LatentAgreement(keras.layers.Layer):
        """Per-pair symmetric InfoNCE loss of a batch of (photo, studio) latents: ``(B,)``."""

        def __init__(self, temperature: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.temperature = float(temperature)

        def call(self, photo, studio):
            photo = ops.normalize(photo, axis=-1)
            studio = ops.normalize(studio, axis=-1)
            logits = ops.matmul(photo, ops.transpose(studio)) / self.temperature
            matched = ops.diagonal(logits)
            return 0.5 * (ops.logsumexp(logits, axis=1) + ops.logsumexp(logits, axis=0)) - matched

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "temperature": self.temperature}

    return LatentAgreement


@functools.cache
def _batch_layers() -> tuple[type, type]:
    keras = _keras()
    ops = keras.ops

    class Stack(keras.layers.Layer):
        """Two batches as one, ``(2B, ...)``: BatchNorm then sees the mix inference will average."""

        def call(self, first, second):
            return ops.concatenate([first, second], axis=0)

    class Halves(keras.layers.Layer):
        """The two halves of a stacked batch."""

        def call(self, stacked):
            first, second = ops.split(stacked, 2, axis=0)
            return first, second

    return Stack, Halves


def _mean_of_prediction(y_true, y_pred):
    """The loss of an output that already is a per-sample loss (the target is ignored)."""
    return _keras().ops.mean(y_pred)


def agreement(photo: np.ndarray, studio: np.ndarray, temperature: float) -> np.ndarray:
    """The retrieval term per pair for latents ``(B, D)`` and ``(B, D)``: ``(B,)`` float32."""
    layer = _agreement_layer()(temperature)
    return np.asarray(layer(photo.astype(np.float32), studio.astype(np.float32)), dtype=np.float32)


def trainer(autoencoder, config):
    """The compiled training graph of a ``robust`` autoencoder.

    Args:
        autoencoder: A model from :func:`imgsim.approaches.autoencoder.nets.build`; its
            ``encoder`` and ``decoder`` are the layers trained.
        config: An :class:`~imgsim.approaches.autoencoder.nets.AutoencoderConfig`.

    Returns:
        A Keras model taking ``{"studio", "photo"}`` uint8 ``(B, S, S, 3)`` and giving
        ``{"studio_out", "photo_out"}`` (``(B, S, S, 3)`` in [0, 1]) and ``"agreement"`` (``(B,)``),
        compiled with the weighted losses; see :func:`targets`.
    """
    keras = _keras()
    encoder, decoder = autoencoder.get_layer("encoder"), autoencoder.get_layer("decoder")
    shape = encoder.input.shape[1:]
    studio = keras.Input(shape, dtype="uint8", name=STUDIO)
    photo = keras.Input(shape, dtype="uint8", name=PHOTO)
    # Studio images and photos go through the encoder and decoder as one batch: encoded apart,
    # each BatchNorm would normalise studio images by studio statistics in training but by the
    # running mix of both at inference, and the reconstructions of catalogue items would suffer.
    stack, halves = _batch_layers()
    latent = encoder(stack(name="pair_batch")(studio, photo))
    z_studio, z_photo = halves(name="latent_halves")(latent)
    redrawn_studio, redrawn_photo = halves(name="redrawn_halves")(decoder(latent))
    outputs = {
        STUDIO_OUT: keras.layers.Identity(name=STUDIO_OUT)(redrawn_studio),
        PHOTO_OUT: keras.layers.Identity(name=PHOTO_OUT)(redrawn_photo),
        AGREEMENT: _agreement_layer()(config.temperature, name=AGREEMENT)(z_photo, z_studio),
    }
    model = keras.Model({STUDIO: studio, PHOTO: photo}, outputs, name="robust_trainer")
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss={STUDIO_OUT: "mse", PHOTO_OUT: "mse", AGREEMENT: _mean_of_prediction},
                  loss_weights={STUDIO_OUT: 1.0, PHOTO_OUT: float(config.photo_weight),
                                AGREEMENT: float(config.contrastive_weight)})
    return model


def inputs(studio: np.ndarray, photo: np.ndarray) -> dict[str, np.ndarray]:
    """The training graph's inputs for a batch of studio images and their photos."""
    return {STUDIO: studio, PHOTO: photo}


def targets(studio: np.ndarray) -> dict[str, np.ndarray]:
    """The training graph's targets for a batch of studio images ``(B, S, S, 3)`` uint8."""
    clean = studio.astype(np.float32) / 255.0
    return {STUDIO_OUT: clean, PHOTO_OUT: clean, AGREEMENT: np.zeros(len(studio), np.float32)}
