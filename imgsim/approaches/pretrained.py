"""The pretrained approach: pooled features of an ImageNet-pretrained CNN, cosine neighbours.

The extractors themselves are in :mod:`imgsim.approaches.features` (EfficientNet-Lite converted
by :mod:`imgsim.approaches.torch_weights`, VGG16), region search over their feature maps in
:mod:`imgsim.approaches.regions`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from imgsim.approaches.base import Approach, RegionSupport, ensure_store
from imgsim.approaches.features import DEFAULT_EXTRACTOR, EXTRACTORS, LITE_SPECS, ExtractorOptions
from imgsim.ingest.catalog import Catalog
from imgsim.storage.artifacts import ArtifactError, read_manifest

PRETRAINED = "pretrained"
PRETTY_MODELS = {
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "vgg16_fc1": "VGG16 fc1",
}
#: The pooling options a region search reproduces (GeM or flip stores are searched whole).
REGION_OPTIONS = ExtractorOptions().as_dict()


def pretty_model(name: str) -> str:
    """A model's display name: ``efficientnet_lite2`` -> ``EfficientNet-Lite2``."""
    return PRETTY_MODELS.get(name, name)


@dataclasses.dataclass(frozen=True)
class PretrainedSettings:
    """Which pretrained extractor, and how its feature map becomes a vector.

    Attributes:
        extractor: One of :data:`imgsim.approaches.features.EXTRACTORS`.
        options: Pooling and flip options.
    """

    extractor: str = DEFAULT_EXTRACTOR
    options: ExtractorOptions = ExtractorOptions()

    def __post_init__(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"`extractor` must be one of {', '.join(EXTRACTORS)}. "
                             f"Received: extractor={self.extractor!r}")
        if not isinstance(self.options, ExtractorOptions):
            raise ValueError(f"`options` must be ExtractorOptions. Received: {type(self.options).__name__}")


def region_support_of(model: str, options: dict[str, Any] | None) -> RegionSupport:
    """Whether vectors of extractor ``model`` with ``options`` can be pooled over regions of a photo."""
    if options != REGION_OPTIONS:
        return RegionSupport(None, f"the store was built with pooling options {options}")
    if model not in LITE_SPECS:
        return RegionSupport(None, f"{model} has no feature map to pool regions from")
    return RegionSupport(model)


class Pretrained(Approach):
    """Average-pooled features of an ImageNet-pretrained CNN."""

    name = PRETRAINED
    title = "Pretrained CNN"
    settings_type = PretrainedSettings
    supports_regions = True

    def label(self, manifest: dict[str, Any] | None = None) -> str:
        model = pretty_model((manifest or {}).get("model", DEFAULT_EXTRACTOR))
        return f"Pretrained CNN ({model})"

    def settings_from_manifest(self, catalog: Catalog) -> PretrainedSettings | None:
        """The extractor and options the store records; None without a readable store."""
        try:
            manifest = read_manifest(self.store_dir(catalog))
            return PretrainedSettings(manifest["model"], ExtractorOptions(**manifest["options"]))
        except (ArtifactError, OSError, KeyError, TypeError, ValueError):
            return None

    def load_model(self, catalog, manifest, model_of):
        from imgsim.approaches.features import load_extractor

        return load_extractor(manifest["model"], ExtractorOptions(**manifest["options"]))

    def build(self, catalog, settings: PretrainedSettings, *, log, progress, learn=True):
        from imgsim.approaches.features import load_extractor

        model = load_extractor(settings.extractor, settings.options)
        ensure_store(self.name, catalog, model, log, progress(self.name))

    def region_support(self, manifest: dict[str, Any]) -> RegionSupport:
        return region_support_of(str(manifest.get("model", "")), manifest.get("options"))


__all__ = ["PRETRAINED", "PRETTY_MODELS", "Pretrained", "PretrainedSettings", "pretty_model",
           "region_support_of"]
