"""Boxes on decoded pictures: ``(x0, y0, x1, y1)`` in pixels, checked and clipped.

A box comes from a user (the app's crop tool, the CLI's ``--box``) or from the region search;
every one is checked here, so a NaN or a box outside the picture is refused in plain words.
"""

from __future__ import annotations

import numpy as np


def crop(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The ``(x0, y0, x1, y1)`` region of ``rgb``, clipped to the image.

    Raises:
        ValueError: The box covers less than 2x2 pixels inside the image.
    """
    x0, y0, x1, y1 = clip_box(box, rgb.shape[:2])
    return rgb[y0:y1, x0:x1]


def clip_box(box: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` rounded and clipped to an image of ``shape`` ``(H, W)``.

    Raises:
        ValueError: A coordinate is not a finite number, or what is left covers less than 2x2.
    """
    if len(box) != 4 or not all(isinstance(v, (int, float, np.number)) and np.isfinite(v) for v in box):
        raise ValueError(f"`box` must be four finite numbers x0, y0, x1, y1. Received: box={box!r}")
    h, w = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(x0, w)), max(0, min(x1, w))
    y0, y1 = max(0, min(y0, h)), max(0, min(y1, h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"`box` must cover at least 2x2 pixels inside the {w}x{h} image. Received: box={box}")
    return x0, y0, x1, y1
