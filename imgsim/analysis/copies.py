"""Altered copies of a photo, as a catalogue team meets them: the same picture uploaded again.

:func:`alter` makes one copy of a kind from :class:`Alteration` (a JPEG round trip at low
quality, a downscale, a crop, relighting, recolouring, a small rotation, a text banner), with
the strengths the duplicates benchmark and the per-catalogue calibration use. Seeded and
reproducible; plain numpy and Pillow.
"""

from __future__ import annotations

import enum
import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance


class Alteration(enum.StrEnum):
    """What was done to a copy."""

    JPEG = "jpeg"  # re-encoded at quality 35-60
    RESIZE = "resize"  # shrunk to 40-70% of its sides
    CROP = "crop"  # cropped to 85-92% of its sides, anywhere
    RELIGHT = "relight"  # brightness and contrast changed by 15-35%, gamma 0.7-1.4
    RECOLOUR = "recolour"  # colour balance and saturation changed
    ROTATE = "rotate"  # turned 2-6 degrees either way, corners filled with white
    BANNER = "banner"  # a text banner across the top or bottom 12-18%


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def alter(rgb: np.ndarray, kind: Alteration | str, rng: np.random.Generator) -> np.ndarray:
    """One altered copy of a photo.

    Args:
        rgb: ``uint8`` ``(H, W, 3)``, at least 16 pixels a side.
        kind: The :class:`Alteration`.
        rng: The randomness (strength, position, banner text).

    Returns:
        ``uint8`` ``(H', W', 3)``; every kind but ``resize`` and ``crop`` keeps the size.

    Raises:
        ValueError: ``rgb`` is not an RGB image of at least 16x16, or ``kind`` is unknown.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 16:
        raise ValueError(f"`rgb` must be a uint8 array of shape (H, W, 3), 16 px or more a side. "
                         f"Received: {rgb.dtype} {rgb.shape}")
    kind = Alteration(kind)
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    if kind is Alteration.JPEG:
        return _jpeg(rgb, rng.integers(35, 61))
    if kind is Alteration.RESIZE:
        f = rng.uniform(0.4, 0.7)
        return np.asarray(im.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BILINEAR))
    if kind is Alteration.CROP:
        fx, fy = rng.uniform(0.85, 0.92, 2)
        cw, ch = round(w * fx), round(h * fy)
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        return rgb[y0:y0 + ch, x0:x0 + cw].copy()
    if kind is Alteration.RELIGHT:
        im = ImageEnhance.Brightness(im).enhance(rng.choice([-1, 1]) * rng.uniform(0.15, 0.35) + 1)
        im = ImageEnhance.Contrast(im).enhance(rng.choice([-1, 1]) * rng.uniform(0.15, 0.35) + 1)
        lut = np.clip(255 * (np.arange(256) / 255) ** rng.uniform(0.7, 1.4), 0, 255).astype(np.uint8)
        return lut[np.asarray(im)]
    if kind is Alteration.RECOLOUR:
        gains = rng.uniform(0.75, 1.25, 3)
        out = np.clip(rgb.astype(np.float32) * gains, 0, 255).astype(np.uint8)
        return np.asarray(ImageEnhance.Color(Image.fromarray(out)).enhance(rng.uniform(0.5, 1.6)))
    if kind is Alteration.ROTATE:
        angle = rng.choice([-1, 1]) * rng.uniform(2, 6)
        return np.asarray(im.rotate(angle, Image.Resampling.BICUBIC, fillcolor=(255, 255, 255)))
    band = max(4, round(h * rng.uniform(0.12, 0.18)))
    y0 = 0 if rng.random() < 0.5 else h - band
    draw = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    draw.rectangle((0, y0, w, y0 + band), fill=colour)
    text = rng.choice(["SALE -50%", "NEW IN", "BEST SELLER", "FREE SHIPPING", "LIMITED"])
    ink = (255, 255, 255) if sum(colour) < 384 else (0, 0, 0)
    draw.text((max(2, w // 10), y0 + band // 4), str(text), fill=ink, font_size=max(8, band // 2))
    return np.asarray(im)


def altered_copies(rgb: np.ndarray, rng: np.random.Generator,
                   kinds: tuple[Alteration, ...] = tuple(Alteration)) -> list[tuple[Alteration, np.ndarray]]:
    """One copy of ``rgb`` per kind in ``kinds``, in that order (see :func:`alter`)."""
    return [(Alteration(k), alter(rgb, k, rng)) for k in kinds]
