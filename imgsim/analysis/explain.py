"""Why similar: which parts of a query matched which parts of a result.

Both photos go through the pretrained CNN once (EfficientNet-Lite's last feature map, one cell
per 32x32 pixels, both in one batch); each cell of one photo gets its best cosine similarity to
the other photo's cells, so a part of the query lights up when the result has a part like it,
wherever that part is. The cell scores are upsampled to the photo and overlaid as a heat map.
Cells that are plain studio white (flat and bright) are background, not a part: they score 0
and cannot be anyone's best match, so two studio shots do not light up for sharing a backdrop.

Photos are padded to a square with white (as the catalogue's models see them) and the padding
cells are left out the same way, so every input shape is the same and the graph is traced once.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgsim.approaches.regions import STRIDE, STUDIO_WHITE
from imgsim.errors import ImgsimError
from imgsim.ingest.images import ImageSource, decode_image, to_square

#: A 32x32 patch whose grey standard deviation is below this, and bright, is plain backdrop.
FLAT_STD = 6.0


class UnknownItemError(ImgsimError, ValueError):
    """An item id that the catalogue does not hold (or holds only as a failed import)."""


@dataclasses.dataclass(frozen=True)
class ExplainConfig:
    """How a pair of photos is explained.

    Attributes:
        input_size: Side, in pixels, of the square each photo is padded and resized to before
            the CNN (a multiple of 32: 384 gives 12x12 cells).
        floor: The cosine shown as the coldest colour; scores from ``floor`` to 1 span the map.
        alpha: Opacity of the heat map over the photo, in [0, 1].
    """

    input_size: int = 384
    floor: float = 0.3
    alpha: float = 0.55

    def __post_init__(self) -> None:
        if not 64 <= self.input_size <= 1024 or self.input_size % STRIDE:
            raise ValueError(f"`input_size` must be a multiple of {STRIDE} in [64, 1024]. "
                             f"Received: input_size={self.input_size}")
        if not 0.0 <= self.floor < 1.0:
            raise ValueError(f"`floor` must be in [0, 1). Received: floor={self.floor}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={self.alpha}")


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Which parts of two photos matched.

    Attributes:
        query: The query photo, ``(H, W, 3)`` uint8, as given.
        result: The result photo, ``(h, w, 3)`` uint8.
        query_heat: ``(H, W)`` float32 in [0, 1]: each pixel's best cosine to the result's cells,
            zero on plain backdrop.
        result_heat: ``(h, w)`` float32 in [0, 1], the same from the result's side.
        similarity: Cosine of the two photos' average-pooled feature maps.
        seconds: Wall time of the explanation (decoding excluded).
        config: The settings used.
    """

    query: np.ndarray
    result: np.ndarray
    query_heat: np.ndarray
    result_heat: np.ndarray
    similarity: float
    seconds: float
    config: ExplainConfig

    def overlays(self) -> tuple[np.ndarray, np.ndarray]:
        """The query and the result with their heat maps laid over them, ``uint8`` RGB."""
        return (overlay(self.query, self.query_heat, self.config),
                overlay(self.result, self.result_heat, self.config))

    def image(self, height: int = 320) -> np.ndarray:
        """Both overlays side by side at ``height`` pixels, a white gap between: ``uint8`` RGB."""
        if height < 16:
            raise ValueError(f"`height` must be >= 16. Received: height={height}")
        panels = []
        for rgb in self.overlays():
            h, w = rgb.shape[:2]
            size = (max(1, round(w * height / h)), height)
            panels.append(np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)))
        gap = np.full((height, 12, 3), 255, np.uint8)
        return np.concatenate([panels[0], gap, panels[1]], axis=1)

    def save(self, path: str | Path) -> Path:
        """Writes :meth:`image` as a PNG at ``path`` (its folder must exist) and returns it."""
        path = Path(path)
        Image.fromarray(self.image()).save(path, format="PNG")
        return path


class _FeatureMaps:
    """EfficientNet-Lite's last feature map for square batches, one Keras call at a time."""

    def __init__(self, extractor_name: str) -> None:
        from imgsim.approaches.features import build_lite_feature_map

        self.model, self.fingerprint = build_lite_feature_map(extractor_name, None)
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self.model.predict_on_batch(batch), np.float32)


_MAPS: dict[str, _FeatureMaps] = {}
_MAPS_LOCK = threading.Lock()


def feature_maps(extractor_name: str = "efficientnet_lite0") -> _FeatureMaps:
    """The feature-map model of an EfficientNet-Lite extractor, built once per process.

    Raises:
        ValueError: Not an EfficientNet-Lite name (other extractors have no feature map here).
        imgsim.approaches.features.ExtractorUnavailableError: Its weights are not installed.
    """
    with _MAPS_LOCK:
        if extractor_name not in _MAPS:
            _MAPS[extractor_name] = _FeatureMaps(extractor_name)
        return _MAPS[extractor_name]


def _padded(rgb: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo padded to a white square at ``side``, and its own box in that square's pixels."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    bw, bh = w * scale, h * scale
    x0, y0 = (side - bw) / 2, (side - bh) / 2
    return to_square(rgb, side), (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x0 + bw)), int(np.ceil(y0 + bh)))


def _cell_mask(square: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``(S/32, S/32)`` bool: cells whose centre is in ``box`` and that are not plain backdrop."""
    side = square.shape[0]
    n = side // STRIDE
    centres = (np.arange(n) + 0.5) * STRIDE
    x0, y0, x1, y1 = box
    inside = ((centres[:, None] >= y0) & (centres[:, None] < y1)) & ((centres[None, :] >= x0) & (centres[None, :] < x1))
    patches = square.reshape(n, STRIDE, n, STRIDE, 3).swapaxes(1, 2).reshape(n, n, -1).astype(np.float32)
    grey = square.astype(np.float32).mean(axis=2).reshape(n, STRIDE, n, STRIDE).swapaxes(1, 2).reshape(n, n, -1)
    backdrop = (grey.std(axis=2) < FLAT_STD) & (patches.min(axis=2) >= STUDIO_WHITE - 10)
    return inside & ~backdrop


def match_heat(fmap_a: np.ndarray, fmap_b: np.ndarray, mask_a: np.ndarray | None = None,
               mask_b: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's best cosine similarity to the other map's cells.

    Args:
        fmap_a: ``(Ha, Wa, C)`` activations.
        fmap_b: ``(Hb, Wb, C)`` activations.
        mask_a: ``(Ha, Wa)`` bool, the cells of ``a`` that take part (default all).
        mask_b: ``(Hb, Wb)`` bool, the same for ``b``.

    Returns:
        ``(heat_a (Ha, Wa), heat_b (Hb, Wb))`` float32, clipped to [0, 1]; cells outside their
        mask, and every cell when the other side has none, are 0.
    """
    fa, fb = np.asarray(fmap_a, np.float32), np.asarray(fmap_b, np.float32)
    if fa.ndim != 3 or fb.ndim != 3 or fa.shape[2] != fb.shape[2]:
        raise ValueError(f"feature maps must be (H, W, C) with the same C. Received: {fa.shape} and {fb.shape}")
    ma = np.ones(fa.shape[:2], bool) if mask_a is None else np.asarray(mask_a, bool)
    mb = np.ones(fb.shape[:2], bool) if mask_b is None else np.asarray(mask_b, bool)
    heat_a, heat_b = np.zeros(fa.shape[:2], np.float32), np.zeros(fb.shape[:2], np.float32)
    if not ma.any() or not mb.any():
        return heat_a, heat_b
    ua = fa[ma] / np.maximum(np.linalg.norm(fa[ma], axis=1, keepdims=True), 1e-12)
    ub = fb[mb] / np.maximum(np.linalg.norm(fb[mb], axis=1, keepdims=True), 1e-12)
    sims = ua @ ub.T
    heat_a[ma] = np.clip(sims.max(axis=1), 0.0, 1.0)
    heat_b[mb] = np.clip(sims.max(axis=0), 0.0, 1.0)
    return heat_a, heat_b


def _to_photo(heat: np.ndarray, side: int, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Cell heat on the padded square -> ``shape`` ``(H, W)`` pixels of the photo (bilinear)."""
    up = Image.fromarray(heat.astype(np.float32), mode="F").resize((side, side), Image.Resampling.BILINEAR)
    up = up.crop(box).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(up, np.float32), 0.0, 1.0)


def overlay(rgb: np.ndarray, heat: np.ndarray, config: ExplainConfig | None = None) -> np.ndarray:
    """The photo with its heat map laid over it (``turbo`` colours from ``config.floor`` to 1).

    Args:
        rgb: ``(H, W, 3)`` uint8.
        heat: ``(H, W)`` in [0, 1].
        config: Floor and opacity.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from matplotlib import colormaps

    config = config or ExplainConfig()
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"`heat` must have the photo's shape {rgb.shape[:2]}. Received: {heat.shape}")
    level = np.clip((heat - config.floor) / (1.0 - config.floor), 0.0, 1.0)
    colours = colormaps["turbo"](level)[..., :3] * 255.0
    alpha = config.alpha * (heat > 0)[..., None]  # backdrop stays as it is
    return np.clip(rgb * (1.0 - alpha) + colours * alpha, 0, 255).astype(np.uint8)


def explain_images(query: np.ndarray, result: np.ndarray, *, extractor_name: str = "efficientnet_lite0",
                   config: ExplainConfig | None = None) -> Explanation:
    """Which parts of ``query`` and ``result`` matched.

    Args:
        query: ``(H, W, 3)`` uint8 photo.
        result: ``(h, w, 3)`` uint8 photo.
        extractor_name: The EfficientNet-Lite whose feature map is compared.
        config: Input size, colour floor and opacity.

    Returns:
        :class:`Explanation`.

    Raises:
        ValueError: A photo is not ``(H, W, 3)`` uint8, or the extractor has no feature map.
    """
    config = config or ExplainConfig()
    for name, rgb in (("query", query), ("result", result)):
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 \
                or min(rgb.shape[:2]) < 2:
            raise ValueError(f"`{name}` must be a uint8 array of shape (H, W, 3). "
                             f"Received: {getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}")
    maps = feature_maps(extractor_name)
    started = time.perf_counter()
    side = config.input_size
    (sq_q, box_q), (sq_r, box_r) = _padded(query, side), _padded(result, side)
    fmaps = maps(np.stack([sq_q, sq_r]))
    mask_q, mask_r = _cell_mask(sq_q, box_q), _cell_mask(sq_r, box_r)
    heat_q, heat_r = match_heat(fmaps[0], fmaps[1], mask_q, mask_r)
    pooled = [f[m].mean(axis=0) if m.any() else f.reshape(-1, f.shape[-1]).mean(axis=0)
              for f, m in ((fmaps[0], mask_q), (fmaps[1], mask_r))]
    similarity = float(pooled[0] @ pooled[1] / max(np.linalg.norm(pooled[0]) * np.linalg.norm(pooled[1]), 1e-12))
    return Explanation(query, result, _to_photo(heat_q, side, box_q, query.shape[:2]),
                       _to_photo(heat_r, side, box_r, result.shape[:2]), similarity,
                       time.perf_counter() - started, config)


def item_row(engine: Any, item_id: str) -> int:
    """The row of ``item_id`` among the engine's ingested items.

    Raises:
        UnknownItemError: No ingested item has that id.
    """
    matches = np.flatnonzero(engine.items["id"].astype(str).to_numpy() == str(item_id))
    if not len(matches):
        raise UnknownItemError(f"{engine.catalog.name} has no item with id {item_id!r}")
    return int(matches[0])


def explain(engine: Any, image: ImageSource | np.ndarray, item_id: str, *,
            config: ExplainConfig | None = None) -> Explanation:
    """Why catalogue item ``item_id`` came back for the query ``image``.

    Args:
        engine: An open :class:`imgsim.Engine` with a pretrained store (its extractor's
            feature map is compared).
        image: The query: a path, bytes, a file object, or an ``(H, W, 3)`` uint8 array.
        item_id: The result's id (the ``id`` column of a search result).
        config: Input size, colour floor and opacity.

    Returns:
        :class:`Explanation` over the query and the item's catalogue photo.

    Raises:
        UnknownItemError: The catalogue has no item ``item_id``.
        imgsim.ImageDecodeError: The query cannot be decoded.
        ValueError: The catalogue has no pretrained store, or its extractor has no feature map.
    """
    row = item_row(engine, item_id)
    model = engine.store("pretrained").manifest.get("model", "")
    if not str(model).startswith("efficientnet_lite"):
        raise ValueError(f"{engine.catalog.name}'s pretrained store uses {model}, which has no feature map "
                         "to explain matches with (EfficientNet-Lite extractors have one)")
    config = config or ExplainConfig()
    query = image if isinstance(image, np.ndarray) else decode_image(image, max_side=2 * config.input_size)
    result = decode_image(engine.items["thumb_path"].iloc[row])
    return explain_images(query, result, extractor_name=str(model), config=config)
