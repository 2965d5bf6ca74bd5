"""Product box proposals from a CNN feature map: a few cues, a few thresholds, a bounded list.

A phone photo's product is found in the extractor's last feature map (one cell per 32x32
input pixels). Each cue gives every cell a saliency:

- ``contrast``: one minus the cosine between the cell's features and the scene's. The scene is
  first the mean of the map's border cells; it is then re-estimated once from the less salient
  half of all cells, so a product cut by the frame edge (its cells on the border) no longer
  passes for scene.
- ``energy``: the cell's total activation (what the CNN responds to most).

The saliency map is upsampled (bilinear, :data:`UPSAMPLE` times) so boxes are not snapped to
32 px cells, thresholded at a fraction of its peak, and the connected group of the largest
saliency mass gives a box. :func:`propose` returns the boxes of a list of ``cue@threshold``
specs, near-duplicates dropped, at most a given number, never empty: a map where nothing
stands out (a uniform photo, a photo smaller than a cell) gives the whole image.
"""

from __future__ import annotations

import enum

import numpy as np

#: How many times the saliency map is upsampled before it is thresholded.
UPSAMPLE = 4
#: Two proposals overlapping at least this much (IoU) are one: the later is dropped.
DUPLICATE_IOU = 0.85
#: A photo whose pixels vary less than this (standard deviation, 0-255) shows nothing to box:
#: its feature map still varies (the CNN's padding lights up the edges), so the map cannot tell.
FLAT_STD = 2.0

Box = tuple[int, int, int, int]


class Cue(enum.StrEnum):
    """What makes a feature-map cell look like the product."""

    CONTRAST = "contrast"
    ENERGY = "energy"


def parse_spec(spec: str) -> tuple[Cue, float]:
    """``"contrast@0.9"`` -> ``(Cue.CONTRAST, 0.9)``.

    Raises:
        ValueError: An unknown cue, or a threshold outside (0, 1).
    """
    cue, _, threshold = str(spec).partition("@")
    try:
        parsed = Cue(cue), float(threshold)
    except ValueError:
        raise ValueError(f"a proposal must be `cue@threshold` with cue one of "
                         f"{', '.join(c.value for c in Cue)}. Received: {spec!r}") from None
    if not 0.0 < parsed[1] < 1.0:
        raise ValueError(f"a proposal's threshold must be in (0, 1). Received: {spec!r}")
    return parsed


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def saliency(feature_map: np.ndarray, cue: Cue | str) -> np.ndarray:
    """``(Hf, Wf, C)`` activations -> ``(Hf, Wf)`` float32 saliency, 0 where nothing stands out.

    Args:
        feature_map: The CNN's last feature map of the photo.
        cue: ``contrast`` (unlike the scene) or ``energy`` (strong activations).
    """
    fmap = np.nan_to_num(np.asarray(feature_map, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if Cue(cue) is Cue.ENERGY:
        return np.maximum(fmap.sum(axis=-1), 0.0)
    alive = np.linalg.norm(fmap, axis=-1) > 1e-6  # an all-zero cell has no direction to compare
    cells = _unit(fmap)
    border = np.concatenate([cells[0], cells[-1], cells[1:-1, 0], cells[1:-1, -1]])
    scene = _unit(border.mean(axis=0))
    contrast = 1.0 - cells @ scene
    quiet = contrast <= np.median(contrast)  # the less salient half: the scene, wherever it is
    if quiet.any():
        scene = _unit(cells[quiet].mean(axis=0))
    return np.where(alive, np.maximum(1.0 - cells @ scene, 0.0), 0.0).astype(np.float32)


def box_of(saliency_map: np.ndarray, threshold: float, image_shape: tuple[int, int],
           upsample: int = UPSAMPLE) -> Box:
    """The box of the most salient connected group above ``threshold`` times the peak.

    Args:
        saliency_map: ``(Hf, Wf)`` non-negative saliency of an image of ``image_shape``.
        threshold: Fraction of the peak a (upsampled) cell needs, in (0, 1).
        image_shape: ``(height, width)`` of the image the box is returned for.
        upsample: Upsampling factor of the map before thresholding.

    Returns:
        ``(x0, y0, x1, y1)`` in the image's pixels; the whole image when the map is flat.
    """
    from scipy import ndimage

    h, w = image_shape
    sal = np.nan_to_num(np.asarray(saliency_map, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if sal.size == 0 or sal.max() - sal.min() <= 1e-6 * max(1.0, abs(sal.max())):
        return (0, 0, w, h)
    if upsample > 1:
        sal = ndimage.zoom(sal, upsample, order=1)
    labels, count = ndimage.label(sal >= threshold * sal.max())
    mass = ndimage.sum(sal, labels, np.arange(1, count + 1))
    ys, xs = np.nonzero(labels == 1 + int(np.argmax(mass)))
    sy, sx = h / sal.shape[0], w / sal.shape[1]
    box = (int(np.floor(xs.min() * sx)), int(np.floor(ys.min() * sy)),
           min(w, int(np.ceil((xs.max() + 1) * sx))), min(h, int(np.ceil((ys.max() + 1) * sy))))
    return box if box[2] - box[0] >= 2 and box[3] - box[1] >= 2 else (0, 0, w, h)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when either is empty)."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return float(ix * iy / union) if union > 0 else 0.0


def propose(feature_map: np.ndarray, image_shape: tuple[int, int], specs: tuple[str, ...],
            limit: int, image: np.ndarray | None = None) -> list[tuple[Box, Cue]]:
    """Box proposals of a photo, in the order of ``specs``, near-duplicates dropped.

    Args:
        feature_map: ``(Hf, Wf, C)`` activations of an image of ``image_shape``.
        image_shape: ``(height, width)`` of the image the boxes are returned for.
        specs: ``cue@threshold`` strings (:func:`parse_spec`); the first gives the query's
            automatic box.
        limit: At most this many boxes (>= 1).
        image: Optional pixels the map was computed from (any size); a flat one
            (:data:`FLAT_STD`) gives the whole image.

    Returns:
        ``[(box, cue), ...]``, 1 to ``limit`` long: boxes overlapping an earlier one at
        :data:`DUPLICATE_IOU` or more are left out. The whole image alone (with the first
        spec's cue) when nothing can stand out: a flat image, or a map under 2x2 cells.

    Raises:
        ValueError: ``limit < 1``, no specs, or a bad spec.
    """
    if limit < 1:
        raise ValueError(f"`limit` must be >= 1. Received: limit={limit}")
    if not specs:
        raise ValueError("`specs` must name at least one proposal. Received: specs=()")
    parsed = [parse_spec(s) for s in specs]
    fmap = np.asarray(feature_map, np.float32)
    h, w = image_shape
    if fmap.ndim != 3 or min(fmap.shape) < 2 or (image is not None and float(np.std(image)) < FLAT_STD):
        return [((0, 0, w, h), parsed[0][0])]
    maps: dict[Cue, np.ndarray] = {}
    out: list[tuple[Box, Cue]] = []
    for cue, threshold in parsed:
        if cue not in maps:
            maps[cue] = saliency(fmap, cue)
        box = box_of(maps[cue], threshold, image_shape)
        if all(iou(box, kept) < DUPLICATE_IOU for kept, _ in out):
            out.append((box, cue))
        if len(out) == limit:
            break
    return out
