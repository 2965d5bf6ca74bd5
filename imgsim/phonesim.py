"""Simulated phone photos of catalogue products, seeded and reproducible.

A catalogue product (a studio shot on a near-white background) is cut out with
:func:`product_mask`, tilted, put in perspective, relit and placed on a scene from
:func:`make_scene` (a lamp-lit wall, a procedural texture, a cluttered desk or a blurred sample
photo), then the whole frame gets a colour temperature, exposure, focus blur, sensor noise and a
JPEG round trip. :func:`simulate_photo` returns the pixels and the product's box, for benchmarks
(how well a phone photo finds its product) and for training models that must ignore the scene.

Everything is vectorised numpy and Pillow: a 96x96 composite takes about a millisecond, a
12 MP photo is composed at a working resolution of at most 1024 px and upscaled, as a phone's
demosaicing and denoising would leave it soft. The sample photos of scikit-image's ``data``
module are used when scikit-image is installed; without it the scenes are procedural only.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: Longest side at which a photo is composed before it is upscaled to the requested size.
WORK_SIDE = 1024
#: A border whose median darkest channel is at least this bright is a studio background.
WHITE_LEVEL = 236
#: Sample photos of ``skimage.data`` used as (blurred) scenes; all ship inside the wheel.
SAMPLE_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
                "hubble_deep_field", "brick", "grass", "gravel", "camera", "clock", "coins",
                "retina", "moon", "colorwheel")
#: How far (per channel) a background pixel may be from the border's median colour.
BACKGROUND_TOLERANCE = 6
_SAMPLE_SIDE = 384
_samples: list[np.ndarray] | None = None
#: Which scenes a photo may be set in: ``all``; ``train`` (the sample photos at even positions of
#: :data:`SAMPLE_NAMES`, for photos a model learns from) or ``eval`` (those at odd positions, for
#: benchmarks), so a model is never scored on a background it was trained on.
SPLITS = ("all", "train", "eval")
#: The first entropy word of :func:`training_rng`; benchmarks and calibration seed with plain
#: integers, so their streams never meet a training stream.
TRAIN_SEED_SPACE = 0x7E57_7A1D


@dataclasses.dataclass(frozen=True)
class SimulatedPhoto:
    """A simulated phone photo.

    Attributes:
        rgb: ``uint8`` array of shape ``(H, W, 3)``.
        box: ``(x0, y0, x1, y1)`` of the product's visible part in ``rgb``, in pixels, ``x1`` and
            ``y1`` exclusive.
    """

    rgb: np.ndarray
    box: tuple[int, int, int, int]


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"`size` must be (width, height), both >= 8. Received: size={size}")
    return int(size[0]), int(size[1])


def _check_rgb(image: np.ndarray, name: str, channels: tuple[int, ...] = (3,)) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] not in channels or image.dtype != np.uint8 or min(image.shape[:2]) < 2:
        raise ValueError(
            f"`{name}` must be a uint8 array of shape (H, W, {'|'.join(map(str, channels))}). "
            f"Received: {name}={image.dtype} {image.shape}"
        )
    return image


def product_mask(product: np.ndarray) -> np.ndarray:
    """Cuts a product off its near-white studio background.

    Background is the near-white pixels connected to the image border; near-white parts inside
    the product's outline (a white shirt's front) stay product. An RGBA input's own alpha is
    used as it is.

    Args:
        product: ``uint8`` array of shape ``(H, W, 3)`` (or ``(H, W, 4)`` with alpha).

    Returns:
        ``float32`` array of shape ``(H, W)`` in ``[0, 1]``: 1 on the product, 0 on the
        background, soft at the edge. All ones when no background is found.
    """
    from scipy import ndimage

    product = _check_rgb(product, "product", (3, 4))
    if product.shape[2] == 4:
        return product[:, :, 3].astype(np.float32) / 255.0
    # The studio background is the border's colour (pure white, up to JPEG noise); a tight
    # tolerance keeps off-white products (a cream skirt) from leaking into it.
    edge = np.concatenate([product[0], product[-1], product[:, 0], product[:, -1]])
    reference = np.median(edge, axis=0)
    if reference.min() < WHITE_LEVEL:  # not a studio shot: nothing to cut out
        return np.ones(product.shape[:2], np.float32)
    distance = np.abs(product.astype(np.int16) - reference.astype(np.int16)).max(axis=2)
    white = distance <= BACKGROUND_TOLERANCE
    labels, _ = ndimage.label(white)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, border[border > 0])
    if background.all():  # a blank white image: nothing to cut out, keep it whole
        return np.ones(product.shape[:2], np.float32)
    soft = ndimage.gaussian_filter((~background).astype(np.float32), 0.6)
    return np.clip(soft * 2.0 - 0.9, 0.0, 1.0).astype(np.float32)  # no white fringe


def _load_samples() -> list[np.ndarray]:
    """scikit-image's bundled sample photos as RGB, longest side 384; empty without skimage."""
    global _samples
    if _samples is None:
        out = []
        try:
            import skimage.data as skdata
        except ImportError:
            skdata = None
        for name in SAMPLE_NAMES if skdata is not None else ():
            try:
                arr = np.asarray(getattr(skdata, name)())
            except (AttributeError, ImportError, OSError, ValueError):
                continue  # a sample that needs a download (pooch) is simply left out
            if arr.dtype != np.uint8:
                continue
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            im = Image.fromarray(np.ascontiguousarray(arr[:, :, :3]))
            im.thumbnail((_SAMPLE_SIDE, _SAMPLE_SIDE), Image.Resampling.BILINEAR)
            out.append(np.asarray(im))
        _samples = out
    return _samples


def _split_samples(split: str) -> list[np.ndarray]:
    """The sample photos a split may use as scenes (see :data:`SPLITS`)."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {', '.join(SPLITS)}. Received: split={split!r}")
    samples = _load_samples()
    return samples if split == "all" else samples[0::2] if split == "train" else samples[1::2]


def training_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for photos a model is trained on, from a seed space of its own.

    Args:
        seed: The training run's seed.
        keys: Further integers (an item's row, a photo's number) that pick the stream.

    Returns:
        A generator whose stream no ``np.random.default_rng(int)`` (a benchmark's) shares.
    """
    return np.random.default_rng([TRAIN_SEED_SPACE, int(seed), *(int(k) for k in keys)])


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1] of shape (h, w, channels): a tiny random grid upsampled."""
    grid = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    mode = "L" if channels == 1 else "RGB"
    im = Image.fromarray(grid[:, :, 0] if channels == 1 else grid, mode)
    out = np.asarray(im.resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255.0
    return out.reshape(h, w, channels)


def _lamp(rng: np.random.Generator, w: int, h: int, strength: float) -> np.ndarray:
    """A lamp's light falloff: (h, w, 1) gains, brightest near a random point in or near the frame."""
    cx, cy = rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h
    radius = rng.uniform(0.4, 1.2) * max(w, h)
    yy, xx = np.ogrid[:h, :w]
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / radius**2
    falloff = 1.0 / (1.0 + d2)
    return (1.0 - strength + strength * falloff / falloff.max())[:, :, None].astype(np.float32)


def _colour(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.9) -> np.ndarray:
    """A random RGB colour in [0, 1], muted more often than not."""
    base = rng.uniform(lo, hi)
    return np.clip(base + rng.normal(0, 0.15, 3), 0.02, 0.98).astype(np.float32)


def make_scene(rng: np.random.Generator, size: tuple[int, int], split: str = "all") -> np.ndarray:
    """A background for a phone photo: a wall, a texture, a cluttered desk or a blurred photo.

    Every scene is lit by a lamp whose light falls off across the frame.

    Args:
        rng: The random generator (the scene is a function of its state).
        size: ``(width, height)`` in pixels.
        split: Which sample photos a blurred-photo scene may use (see :data:`SPLITS`).

    Returns:
        ``uint8`` array of shape ``(height, width, 3)``.
    """
    w, h = _check_size(size)
    samples = _split_samples(split)
    kinds = ["wall", "texture", "clutter"] + (["photo", "photo"] if samples else [])
    kind = kinds[rng.integers(len(kinds))]
    if kind == "photo":
        src = samples[rng.integers(len(samples))]
        sh, sw = src.shape[:2]
        cw = int(rng.uniform(0.5, 1.0) * sw)
        ch = min(sh, max(2, int(cw * h / w)))
        x0, y0 = rng.integers(0, sw - cw + 1), rng.integers(0, sh - ch + 1)
        im = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw]).resize((w, h), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.002, 0.02) * max(w, h)))
        scene = np.asarray(im, np.float32) / 255.0
        scene = scene * rng.uniform(0.6, 1.0) + _colour(rng) * rng.uniform(0.0, 0.4)
    elif kind == "wall":
        top, bottom = _colour(rng, 0.3, 0.95), _colour(rng, 0.3, 0.95)
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        scene = top * (1 - t) + bottom * t
        scene = scene * (0.9 + 0.2 * _smooth_noise(rng, w, h, int(rng.integers(3, 9))))
    elif kind == "texture":
        a, b = _colour(rng), _colour(rng)
        yy, xx = np.mgrid[:h, :w].astype(np.float32) / max(w, h)
        theta = rng.uniform(0, np.pi)
        freq = rng.uniform(4, 40)
        warp = _smooth_noise(rng, w, h, int(rng.integers(3, 8)))[:, :, 0] * rng.uniform(0, 3)
        u = (xx * np.cos(theta) + yy * np.sin(theta)) * freq + warp
        pattern = rng.integers(3)
        if pattern == 0:  # stripes, wood grain or fabric
            t = 0.5 + 0.5 * np.sin(2 * np.pi * u)
        elif pattern == 1:  # tiles or a checked cloth
            v = (-xx * np.sin(theta) + yy * np.cos(theta)) * freq
            t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
        else:  # blotches: stone, carpet
            t = _smooth_noise(rng, w, h, int(rng.integers(6, 30)))[:, :, 0]
        scene = a * t[:, :, None] + b * (1 - t[:, :, None])
        scene = scene * (0.85 + 0.3 * _smooth_noise(rng, w, h, 32))
    else:  # clutter: shapes of many colours on a surface, out of focus
        base = (_colour(rng, 0.3, 0.9) * 255).astype(np.uint8)
        im = Image.new("RGB", (w, h), tuple(int(c) for c in base))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(4, 14))):
            cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
            rw, rh = rng.uniform(0.04, 0.35) * w, rng.uniform(0.04, 0.35) * h
            colour = tuple(int(c) for c in _colour(rng, 0.05, 0.95) * 255)
            shape = [cx - rw, cy - rh, cx + rw, cy + rh]
            if rng.random() < 0.5:
                draw.rectangle(shape, fill=colour)
            else:
                draw.ellipse(shape, fill=colour)
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.003, 0.015) * max(w, h)))
        scene = np.asarray(im, np.float32) / 255.0
    scene = scene * _lamp(rng, w, h, rng.uniform(0.2, 0.7)) * rng.uniform(0.8, 1.2)
    return (np.clip(scene, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """Pillow's PERSPECTIVE coefficients that map output points ``dst`` back to input ``src``."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.asarray(rows, np.float64), src.reshape(-1).astype(np.float64)))


def _pose(rng: np.random.Generator, product: np.ndarray, alpha: np.ndarray, target: float,
          frame: tuple[int, int], max_tilt: float) -> Image.Image:
    """The product as RGBA, cropped to its outline, tilted and in perspective (one warp), its
    longer side ``target`` times the frame's matching side."""
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs):
        product = product[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    rgba = np.dstack([product[:, :, :3], (alpha * 255 + 0.5).astype(np.uint8)])
    im = Image.fromarray(rgba, "RGBA").convert("RGBa")  # premultiplied: no white bleeds in
    w, h = im.size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    dst = corners + rng.uniform(-0.07, 0.07, (4, 2)) * (w, h)
    angle = np.deg2rad(np.clip(rng.normal(0, max_tilt / 2), -max_tilt, max_tilt))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (dst - (w / 2, h / 2)) @ rot.T
    dst -= dst.min(axis=0)
    fw, fh = frame
    extent = dst.max(axis=0)
    scale = target / max(extent[0] / fw, extent[1] / fh)
    if scale < 0.5:  # the warp does not antialias: shrink most of the way first
        pre = max(2.0 * scale, 2.0 / min(w, h))
        im = im.resize((max(2, round(w * pre)), max(2, round(h * pre))), Image.Resampling.BILINEAR)
        corners = corners * (im.size[0] / w, im.size[1] / h)
    dst = dst * scale
    out = (max(2, int(np.ceil(dst[:, 0].max()))), max(2, int(np.ceil(dst[:, 1].max()))))
    im = im.transform(out, Image.Transform.PERSPECTIVE, _perspective_coeffs(corners, dst),
                      Image.Resampling.BILINEAR)
    return im.convert("RGBA")


def _procedural_object(rng: np.random.Generator) -> np.ndarray:
    """A catalogue-looking object on white: a coloured, patterned shape (a bag, a box, a shoe)."""
    side = 96
    im = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in _colour(rng, 0.05, 0.8) * 255)
    x0, y0 = rng.integers(4, 30, 2)
    x1, y1 = side - rng.integers(4, 30, 2)
    draw.rounded_rectangle([x0, y0, x1, y1], radius=int(rng.integers(2, 30)), fill=colour)
    stripe = tuple(int(c) for c in _colour(rng, 0.05, 0.95) * 255)
    for k in range(int(rng.integers(0, 4))):
        yy = y0 + (k + 1) * (y1 - y0) // 5
        draw.rectangle([x0 + 3, yy, x1 - 3, yy + 4], fill=stripe)
    return np.asarray(im)


def _paste(canvas: np.ndarray, im: Image.Image, x: int, y: int, gain: float = 1.0) -> np.ndarray:
    """Alpha-blends RGBA ``im`` (its colours times ``gain``, its own light) onto float
    ``canvas`` (h, w, 3) at (x, y); returns the full-frame alpha of what was pasted (parts
    outside the frame are dropped)."""
    h, w = canvas.shape[:2]
    full = np.zeros((h, w), np.float32)
    pw, ph = im.size
    cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
    if cx0 >= cx1 or cy0 >= cy1:
        return full
    arr = np.asarray(im, np.float32)[cy0 - y:cy1 - y, cx0 - x:cx1 - x] / 255.0
    a = arr[:, :, 3:4]
    region = canvas[cy0:cy1, cx0:cx1]
    canvas[cy0:cy1, cx0:cx1] = region * (1 - a) + np.minimum(arr[:, :, :3] * gain, 1.0) * a
    full[cy0:cy1, cx0:cx1] = a[:, :, 0]
    return full


def _shadow(canvas: np.ndarray, im: Image.Image, x: int, y: int, rng: np.random.Generator,
            strength: float) -> None:
    """Darkens ``canvas`` under a blurred, offset copy of ``im``'s outline (a cast shadow)."""
    pw, ph = im.size
    blur = rng.uniform(0.02, 0.08) * max(pw, ph)
    pad = int(2 * blur) + 1
    a = Image.new("L", (pw + 2 * pad, ph + 2 * pad), 0)
    a.paste(im.getchannel("A"), (pad, pad))
    shade = np.asarray(a.filter(ImageFilter.GaussianBlur(blur)), np.float32) * (strength / 255.0)
    dx, dy = (rng.uniform(-0.12, 0.12, 2) * (pw, ph)).astype(int)
    x, y = x - pad + dx, y - pad + dy
    h, w = canvas.shape[:2]
    sh, sw = shade.shape
    cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if cx0 < cx1 and cy0 < cy1:
        canvas[cy0:cy1, cx0:cx1] *= 1.0 - shade[cy0 - y:cy1 - y, cx0 - x:cx1 - x, None]


def _free_spot(rng: np.random.Generator, frame: tuple[int, int], size: tuple[int, int],
               avoid: tuple[int, int, int, int]) -> tuple[int, int]:
    """A position for an object of ``size`` that overlaps the box ``avoid`` little (best of 8)."""
    fw, fh = frame
    best, best_overlap = (0, 0), None
    for _ in range(8):
        x = int(rng.uniform(-0.2, 1.0) * fw - 0.2 * size[0])
        y = int(rng.uniform(-0.2, 1.0) * fh - 0.2 * size[1])
        ox = max(0, min(x + size[0], avoid[2]) - max(x, avoid[0]))
        oy = max(0, min(y + size[1], avoid[3]) - max(y, avoid[1]))
        if best_overlap is None or ox * oy < best_overlap:
            best, best_overlap = (x, y), ox * oy
    return best


def simulate_photo(product: np.ndarray, rng: np.random.Generator, *,
                   size: tuple[int, int] = (4000, 3000), hard: bool = False,
                   scene: np.ndarray | None = None,
                   distractor: np.ndarray | None = None, split: str = "all") -> SimulatedPhoto:
    """A phone photo of a catalogue product placed in a scene.

    The product (cut from its white background) covers 35-65% of the frame along its longer
    side, tilted and in perspective, with a soft shadow; the frame gets a lamp's light falloff,
    a colour temperature, exposure, focus blur, noise and JPEG artefacts. The hard tier cuts the
    product by the frame edge more often than not, casts a strong shadow across the frame, and
    adds a second catalogue-looking object to the scene.

    Args:
        product: ``uint8`` ``(H, W, 3)`` studio shot on near-white, or ``(H, W, 4)`` with its
            cut-out as alpha (pass :func:`product_mask` once as alpha when simulating many
            photos of the same product).
        rng: The random generator; the same state gives the same photo.
        size: ``(width, height)`` of the photo; 4000x3000 is a 12 MP phone photo.
        hard: The hard tier.
        scene: Optional background (``uint8`` ``(h, w, 3)``, resized to fit); a new
            :func:`make_scene` otherwise.
        distractor: The hard tier's second object (another product's studio shot); a
            procedural object otherwise.
        split: The scenes it may be set in (see :data:`SPLITS`): ``train`` for photos a model
            learns from, ``eval`` for the photos it is scored on.

    Returns:
        :class:`SimulatedPhoto` with ``rgb`` of shape ``(height, width, 3)`` and the product's
        box in it.

    Raises:
        ValueError: Bad shapes or sizes.
    """
    width, height = _check_size(size)
    product = _check_rgb(product, "product", (3, 4))
    shrink = min(1.0, WORK_SIDE / max(width, height))
    w, h = max(8, round(width * shrink)), max(8, round(height * shrink))
    if scene is None:
        canvas = make_scene(rng, (w, h), split).astype(np.float32) / 255.0
    else:
        scene = _check_rgb(scene, "scene")
        canvas = np.asarray(Image.fromarray(scene).resize((w, h), Image.Resampling.BILINEAR),
                            np.float32) / 255.0

    alpha = product_mask(product)
    target = rng.uniform(0.35, 0.65) if not hard else rng.uniform(0.4, 0.75)
    posed = _pose(rng, product, alpha, target, (w, h), max_tilt=20.0 if hard else 12.0)
    pw, ph = posed.size
    if hard and rng.random() < 0.7:  # partly out of the frame on one side
        out = rng.uniform(0.12, 0.35)
        x = int(rng.uniform(0, max(1, w - pw)))
        y = int(rng.uniform(0, max(1, h - ph)))
        side = rng.integers(4)
        if side == 0:
            x = -int(out * pw)
        elif side == 1:
            x = w - pw + int(out * pw)
        elif side == 2:
            y = -int(out * ph)
        else:
            y = h - ph + int(out * ph)
    else:  # inside the frame, nearer the centre than the edges
        x = int((w - pw) * np.clip(rng.normal(0.5, 0.2), 0, 1))
        y = int((h - ph) * np.clip(rng.normal(0.5, 0.2), 0, 1))
    if hard:
        other = distractor if distractor is not None else _procedural_object(rng)
        other = _check_rgb(other, "distractor", (3, 4))
        o_im = _pose(rng, other, product_mask(other), rng.uniform(0.25, 0.45), (w, h), 20.0)
        ox, oy = _free_spot(rng, (w, h), o_im.size, (x, y, x + pw, y + ph))
        _shadow(canvas, o_im, ox, oy, rng, rng.uniform(0.3, 0.6))
        _paste(canvas, o_im, ox, oy)
    _shadow(canvas, posed, x, y, rng, rng.uniform(0.5, 0.8) if hard else rng.uniform(0.1, 0.45))
    placed = _paste(canvas, posed, x, y, rng.uniform(0.85, 1.1))

    if hard:  # a strong cast shadow across part of the frame (a person, a shelf)
        yy, xx = np.ogrid[:h, :w]
        theta = rng.uniform(0, 2 * np.pi)
        edge = (xx - rng.uniform(0.2, 0.8) * w) * np.cos(theta) + (yy - rng.uniform(0.2, 0.8) * h) * np.sin(theta)
        soft = rng.uniform(0.01, 0.08) * max(w, h)
        shade = 1.0 / (1.0 + np.exp(-edge / soft))
        canvas *= (1.0 - rng.uniform(0.4, 0.65) * shade)[:, :, None]

    # The camera: exposure, white balance, vignetting, focus, noise, JPEG.
    temperature = rng.uniform(-0.25, 0.25) if hard else rng.uniform(-0.15, 0.15)
    gains = np.array([1 + temperature, 1 + 0.2 * rng.uniform(-0.1, 0.1), 1 - temperature], np.float32)
    canvas *= gains * rng.uniform(0.65, 1.3)
    canvas *= _lamp(rng, w, h, rng.uniform(0.0, 0.35))
    canvas = np.clip(canvas, 0.0, 1.0) ** rng.uniform(0.85, 1.15)
    im = Image.fromarray((canvas * 255.0 + 0.5).astype(np.uint8))
    blur = rng.uniform(0.0, 0.003 if not hard else 0.005) * max(w, h)
    if blur > 0.3:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    sigma = rng.uniform(1.0, 10.0 if hard else 6.0)
    noisy = np.asarray(im, np.float32) + rng.normal(0.0, sigma, (h, w, 1)).astype(np.float32) \
        + rng.normal(0.0, sigma / 2, (h, w, 3)).astype(np.float32)
    im = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(55, 96)))
    im = Image.open(buf)
    im.load()
    if (w, h) != (width, height):
        im = im.resize((width, height), Image.Resampling.BICUBIC)

    ys, xs = np.nonzero(placed > 0.5)
    if len(xs) == 0:  # cannot happen with the placements above; keep the box well-defined
        x0, y0, x1, y1 = 0, 0, w, h
    else:
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    sx, sy = width / w, height / h
    box = (int(np.floor(x0 * sx)), int(np.floor(y0 * sy)),
           min(width, int(np.ceil(x1 * sx))), min(height, int(np.ceil(y1 * sy))))
    return SimulatedPhoto(np.asarray(im, np.uint8), box)
