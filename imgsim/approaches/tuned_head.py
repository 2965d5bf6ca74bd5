"""The tuned approach's head: a linear map over pretrained vectors that keeps each product's identity.

The catalogue teaches itself street-to-shop without labels. For a training subset of items,
:func:`training_views` makes simulated phone photos (:mod:`imgsim.phonesim`, its ``train``
scenes and seed space) and embeds crops of them as a query's regions are embedded (the product's
box, jittered, and a looser box with some scene around it, each made square on white).

:func:`fit_head` then solves a discriminant analysis with every item as its own class: the
"noise" to suppress is how a photo's vector differs from its item's studio vector (scene, light,
tilt, crop), the "signal" to keep is how items' studio vectors differ from one another. Where
the catalogue has labels, the spread of items around their label's mean is added to the noise
with a small weight, so items of one label move closer together as well. The map is the top
generalised eigenvectors of ``(signal, noise + ridge)``; a vector is centred, mapped and
unit-normalised, and searched by cosine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from imgsim.progress import Progress, silent

# Chosen on benchmarks/phone_photos.py (1,235 items, 285 held out and photographed; standard tier
# ranked 1st / top 10 / label P@10 with regions, pretrained 0.71 / 0.87 / 0.61): 256 dims, ridge
# 0.1 -> 0.71 / 0.95 / 0.66; ridge 0.01 -> 0.69 / 0.92; ridge 0.3 -> 0.79 / 0.95 / 0.65; 512 dims
# with ridge 0.3 -> 0.79 / 0.97 / 0.64 (hard tier top 10 0.73 against 0.62); label weight 0 ->
# 0.73 / 0.94 / 0.62, 1.0 -> 0.71 / 0.94 / 0.69.
#: Output dimensions (fewer when the features, or the items, are fewer).
DEFAULT_DIMS = 512
#: The ridge added to the noise covariance, as a share of its mean eigenvalue.
DEFAULT_RIDGE = 0.3
#: The label term's weight against the photo-noise term.
DEFAULT_LABEL_WEIGHT = 0.3
#: Size of a training photo (width, height): crops are embedded at the extractor's size anyway.
PHOTO_SIZE = (640, 480)
#: Crops per training photo: the product's box (jittered) and a looser box with scene around it.
CROPS_PER_PHOTO = 2


@dataclasses.dataclass(frozen=True)
class Projection:
    """``x -> normalise(x @ matrix - mean)``: the tuned head.

    Attributes:
        matrix: ``(in_dim, out_dim)`` float32.
        mean: ``(out_dim,)`` float32, the mapped mean of the catalogue's studio vectors.
    """

    matrix: np.ndarray
    mean: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Maps ``(N, in_dim)`` features to ``(N, out_dim)`` unit vectors."""
        y = np.asarray(x, dtype=np.float32) @ self.matrix - self.mean
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


def usable_labels(labels: np.ndarray) -> np.ndarray:
    """A mask of the items whose label is non-empty and shared by at least one other item."""
    labels = np.asarray(labels).astype(str)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (labels != "") & (counts[inverse] >= 2)


def photo_noise(views: np.ndarray, owners: np.ndarray, studio: np.ndarray) -> np.ndarray:
    """The covariance of how photo vectors differ from their items' studio vectors.

    Args:
        views: ``(M, dim)`` vectors of photo crops.
        owners: ``(M,)`` row in ``studio`` of each crop's item.
        studio: ``(N, dim)`` the catalogue's studio vectors.

    Returns:
        ``(dim, dim)`` float64.

    Raises:
        ValueError: No views, or shapes that do not match.
    """
    views, studio = np.asarray(views, np.float64), np.asarray(studio, np.float64)
    owners = np.asarray(owners, np.int64)
    if len(views) == 0 or views.shape[1:] != studio.shape[1:] or owners.shape != (len(views),):
        raise ValueError(f"`views` ({views.shape}), `owners` ({owners.shape}) and `studio` ({studio.shape}) "
                         "must hold at least one view of the studio vectors' dimension, one owner each")
    residual = views - studio[owners]
    return residual.T @ residual / len(residual)


def label_spread(studio: np.ndarray, labels: np.ndarray | None) -> np.ndarray | None:
    """The covariance of items around their label's mean (items with usable labels), or None."""
    if labels is None:
        return None
    labels = np.asarray(labels).astype(str)
    mask = usable_labels(labels)
    if len(set(labels[mask])) < 2:
        return None
    x, y = np.asarray(studio, np.float64)[mask], labels[mask]
    _, codes = np.unique(y, return_inverse=True)
    means = np.zeros((codes.max() + 1, x.shape[1]))
    np.add.at(means, codes, x)
    means /= np.bincount(codes)[:, None]
    residual = x - means[codes]
    return residual.T @ residual / len(residual)


def fit_head(studio: np.ndarray, noise: np.ndarray, labels: np.ndarray | None = None, *,
             label_weight: float = DEFAULT_LABEL_WEIGHT, dims: int = DEFAULT_DIMS,
             ridge: float = DEFAULT_RIDGE) -> Projection:
    """Solves the item-level discriminant analysis (see the module's docstring).

    Args:
        studio: ``(N, dim)`` the catalogue's studio vectors (every item: no labels needed).
        noise: ``(dim, dim)`` :func:`photo_noise`.
        labels: Optional ``(N,)`` labels; empty ones and labels of one item are ignored.
        label_weight: Weight of the label term (0 for none).
        dims: Output dimensions (at most ``dim``, and fewer than the items).
        ridge: Share of the noise's mean eigenvalue added to its diagonal.

    Returns:
        The :class:`Projection`.

    Raises:
        ValueError: Fewer than 2 items, or arguments out of range.
    """
    from scipy.linalg import eigh

    studio = np.asarray(studio, np.float64)
    if studio.ndim != 2 or len(studio) < 2:
        raise ValueError(f"`studio` must be (N >= 2, dim). Received shape: {studio.shape}")
    if label_weight < 0 or ridge <= 0 or dims < 1:
        raise ValueError(f"`label_weight` must be >= 0, `ridge` > 0 and `dims` >= 1. Received: "
                         f"label_weight={label_weight}, ridge={ridge}, dims={dims}")
    centre = studio.mean(axis=0)
    centred = studio - centre
    within = np.array(noise, np.float64)
    spread = label_spread(studio, labels) if label_weight > 0 else None
    if spread is not None:
        within = within + label_weight * spread
    basis = None
    if len(studio) <= studio.shape[1]:
        # Fewer items than dimensions: the items span a subspace, and directions outside it
        # separate nothing; solving inside it (as Fisherfaces do) is exact there and far cheaper.
        u, sv, _ = np.linalg.svd(centred.T, full_matrices=False)
        basis = u[:, sv > sv[0] * 1e-6] if sv[0] > 0 else u[:, :1]
        centred, within = centred @ basis, basis.T @ within @ basis
    dim = centred.shape[1]
    signal = centred.T @ centred / len(centred)
    within += (ridge * max(np.trace(within) / dim, 1e-12)) * np.eye(dim)
    out = min(int(dims), dim)
    _, vectors = eigh(signal, within, subset_by_index=(dim - out, dim - 1))
    matrix = vectors[:, ::-1]  # strongest first
    matrix = (basis @ matrix if basis is not None else matrix).astype(np.float32)
    return Projection(matrix, (centre @ matrix).astype(np.float32))


def jittered_box(rng: np.random.Generator, box: tuple[int, int, int, int], size: tuple[int, int],
                 grow: tuple[float, float]) -> tuple[int, int, int, int]:
    """``box`` scaled by a factor drawn from ``grow``, shifted a little, kept inside ``size``."""
    x0, y0, x1, y1 = box
    w, h = size
    bw, bh = max(2, x1 - x0), max(2, y1 - y0)
    scale = rng.uniform(*grow)
    cx = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * bw
    cy = (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * bh
    nw, nh = bw * scale / 2, bh * scale / 2
    out = (int(max(0, cx - nw)), int(max(0, cy - nh)), int(min(w, cx + nw)), int(min(h, cy + nh)))
    return out if out[2] - out[0] >= 2 and out[3] - out[1] >= 2 else (0, 0, w, h)


def training_views(load_rgb: Callable[[int], np.ndarray], rows: np.ndarray, embed: Callable, image_size: int,
                   photos_per_item: int, seed: int = 0, progress: Progress = silent,
                   batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of crops of simulated phone photos of ``rows``, as a query's regions are embedded.

    Every other photo is of the hard tier (cut by the frame, a strong shadow, a second object).
    Photos use :mod:`imgsim.phonesim`'s ``train`` scenes and :func:`~imgsim.phonesim.training_rng`,
    so no benchmark photo or background is ever learned from.

    Args:
        load_rgb: Row -> the item's studio photo, ``(H, W, 3)`` uint8.
        rows: The training items' rows.
        embed: The base extractor's ``embed``: ``(B, S, S, 3)`` uint8 -> ``(B, dim)``.
        image_size: The extractor's input side ``S``.
        photos_per_item: Simulated photos per item.
        seed: The training run's seed.
        progress: Receives ``(done, total, what)``.
        batch: Crops per ``embed`` call.

    Returns:
        ``(views (M, dim) float32, owners (M,) int64)``: each crop's vector and its item's row.
    """
    from imgsim.ingest.images import to_square
    from imgsim.phonesim import product_mask, simulate_photo, training_rng

    squares, owners, vectors = [], [], []

    def flush() -> None:
        if squares:
            vectors.append(np.asarray(embed(np.stack(squares)), np.float32))
            squares.clear()

    total = len(rows) * photos_per_item
    for done, (row, photo) in enumerate((int(r), p) for r in rows for p in range(photos_per_item)):
        rng = training_rng(seed, row, photo)
        product = load_rgb(row)
        rgba = np.dstack([product, (product_mask(product) * 255).astype(np.uint8)])
        shot = simulate_photo(rgba, rng, size=PHOTO_SIZE, hard=photo % 2 == 1, split="train")
        h, w = shot.rgb.shape[:2]
        for grow in ((0.9, 1.25), (1.3, 1.9)):
            x0, y0, x1, y1 = jittered_box(rng, shot.box, (w, h), grow)
            squares.append(to_square(shot.rgb[y0:y1, x0:x1], image_size))
            owners.append(row)
        if len(squares) >= batch:
            flush()
        progress(done + 1, total, "simulated photos")
    flush()
    if not vectors:
        raise ValueError("no training photos: `rows` is empty")
    return np.concatenate(vectors), np.asarray(owners, np.int64)
