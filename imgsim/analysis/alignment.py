"""The finer check of near-duplicate candidates: align one photo onto the other, compare blocks.

Two catalogue photos of different products of one kind (the same model, pose and white
background) have pooled CNN vectors as close as a photo and its re-encoded, cropped or relit
copy, so the vectors only propose candidates. What tells a copy apart is pixel structure: after
the right crop and a small rotation, a copy matches its original block by block, down to the
print of the fabric; another product does not. :func:`match_score` finds the crop (85-100% of
each side, anywhere) and rotation (up to 6 degrees) that best maps one grey image onto the
other at low resolution, then scores the blocks at a higher one by normalised correlation
(robust to relighting and recolouring); blocks that are plain background in both say nothing
and are left out, and the worst few are dropped (a banner, a sticker).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

#: Side of the grey working image every photo is stretched to.
WORK = 72
#: Sides of the coarse (alignment) and fine (scoring) samplings.
COARSE, FINE = 24, 64
#: Fine blocks per side, and how many of the worst informative blocks are dropped.
BLOCKS, DROPPED = 4, 4
#: A block whose grey standard deviation is below this in both photos is plain background.
FLAT_STD = 4.0


def grey(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(WORK, WORK)`` float32 luminance, stretched (aspect not kept)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"`rgb` must be a uint8 array of shape (H, W, 3). Received: {rgb.dtype} {rgb.shape}")
    im = Image.fromarray(rgb).convert("L").resize((WORK, WORK), Image.Resampling.BOX)
    return np.asarray(im, np.float32)


@dataclasses.dataclass(frozen=True)
class Window:
    """Where one photo sits in another, in unit coordinates of the other (stretched square)."""

    cx: float = 0.5
    cy: float = 0.5
    sx: float = 1.0
    sy: float = 1.0
    degrees: float = 0.0


def _sample(g: np.ndarray, windows: list[Window], side: int) -> np.ndarray:
    """Bilinear samples of ``g`` over each window: ``(len(windows), side, side)``."""
    w = np.array([(q.cx, q.cy, q.sx, q.sy, np.deg2rad(q.degrees)) for q in windows])
    t = (np.arange(side) + 0.5) / side - 0.5
    u, v = t[None, None, :], t[None, :, None]
    cos, sin = np.cos(w[:, 4])[:, None, None], np.sin(w[:, 4])[:, None, None]
    su, sv = w[:, 2, None, None] * u, w[:, 3, None, None] * v
    xs = (w[:, 0, None, None] + su * cos - sv * sin) * WORK - 0.5
    ys = (w[:, 1, None, None] + su * sin + sv * cos) * WORK - 0.5
    xs, ys = np.clip(xs, 0, WORK - 1.001), np.clip(ys, 0, WORK - 1.001)
    x0, y0 = xs.astype(np.int64), ys.astype(np.int64)
    ax, ay = xs - x0, ys - y0
    return (g[y0, x0] * (1 - ay) * (1 - ax) + g[y0, x0 + 1] * (1 - ay) * ax
            + g[y0 + 1, x0] * ay * (1 - ax) + g[y0 + 1, x0 + 1] * ay * ax).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _crops() -> list[Window]:
    sides = [(1.0, 0.5)] + [(s, c) for s in (0.92, 0.885, 0.85) for c in np.linspace(s / 2, 1 - s / 2, 3)]
    return [Window(cx, cy, sx, sy) for sx, cx in sides for sy, cy in sides]


_CROPS = _crops()


def _best(big: np.ndarray, target: np.ndarray, windows: list[Window]) -> tuple[Window, float]:
    scores = _unit_rows(_sample(big, windows, COARSE).reshape(len(windows), -1)) @ target
    i = int(np.argmax(scores))
    return windows[i], float(scores[i])


def align(big: np.ndarray, small: np.ndarray) -> tuple[Window, float]:
    """The window of ``big`` that looks most like all of ``small`` (both from :func:`grey`).

    A coarse search over crops, then refinements of the rotation, the position and the size.

    Returns:
        The window and its coarse correlation in [-1, 1].
    """
    target = _unit_rows(_sample(small, [Window()], COARSE).reshape(-1))
    best, _ = _best(big, target, _CROPS)
    best, _ = _best(big, target, [dataclasses.replace(best, degrees=d) for d in range(-6, 7, 2)])
    for step in (0.015, 0.006):
        steps = (-2 * step, -step, 0.0, step, 2 * step)
        best, _ = _best(big, target, [dataclasses.replace(best, cx=best.cx + dx, cy=best.cy + dy)
                                      for dx in steps for dy in steps])
        best, _ = _best(big, target, [dataclasses.replace(best, sx=best.sx + dx, sy=best.sy + dy)
                                      for dx in steps for dy in steps])
    return _best(big, target, [dataclasses.replace(best, degrees=best.degrees + d) for d in (-1, 0, 1)])


def block_score(big: np.ndarray, small: np.ndarray, window: Window) -> float:
    """Mean block correlation of ``small`` against ``window`` of ``big`` (see the module's doc)."""
    side = FINE // BLOCKS

    def blocks(x: np.ndarray) -> np.ndarray:
        return x.reshape(BLOCKS, side, BLOCKS, side).swapaxes(1, 2).reshape(BLOCKS * BLOCKS, side * side)

    a = blocks(_sample(big, [window], FINE)[0])
    b = blocks(_sample(small, [Window()], FINE)[0])
    informative = (a.std(axis=1) >= FLAT_STD) | (b.std(axis=1) >= FLAT_STD)
    if informative.sum() <= DROPPED:  # (almost) blank photos: their whole-image correlation
        return float(_unit_rows(a.reshape(-1)) @ _unit_rows(b.reshape(-1)))
    corr = (_unit_rows(a[informative]) * _unit_rows(b[informative])).sum(axis=1)
    return float(np.sort(corr)[DROPPED:].mean())


def match_score(a: np.ndarray, b: np.ndarray) -> float:
    """How surely ``b`` is ``a`` altered (or the other way round), in [-1, 1].

    Args:
        a: :func:`grey` of one photo.
        b: :func:`grey` of the other.

    Returns:
        The better of the two directions (a crop of ``a`` is ``b``, or a crop of ``b`` is ``a``):
        about 0.98-1 for a copy that is re-encoded, resized or recoloured, 0.9-0.99 for a
        cropped, relit, rotated or bannered one; distinct products mostly score lower, but
        plain dark products on white (wallets, belts) can reach 0.99 on their outline alone,
        which is why candidates are judged with the CNN cosine too (:mod:`imgsim.analysis.duplicates`).
    """
    best = -1.0
    for big, small in ((a, b), (b, a)):
        window, _ = align(big, small)
        best = max(best, block_score(big, small, window))
    return best
