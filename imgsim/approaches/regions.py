"""Query regions: a phone photo becomes a few region vectors, and each item scores by its best.

A product photographed on a table fills half the frame; the whole-photo vector mixes it with
the scene, so a catalogue of studio shots is searched with a blurred question. Here a query is
a few vectors, all in the catalogue's own space (the extractor's average-pooled 224 px vector):

- one forward pass at a higher resolution (``input_size`` on the long side, aspect kept) gives
  the CNN's last feature map; grid windows at a few ``scales`` (R-MAC-style, half-overlapping)
  are average-pooled from it, as the extractor pools its whole map;
- the same map gives box proposals (:mod:`imgsim.approaches.boxes`: cells unlike the scene,
  and cells with the strongest activations, at a few thresholds; :func:`product_box` is the
  earlier single box per method); each box is cropped from the photo, made square with white
  like a studio shot, and embedded at the extractor's size in one batched call, at most
  ``max_crops`` squares a query. Crops match the catalogue far better than pooled regions,
  because the CNN then sees the product on white, as in the catalogue. On the phone-photo
  benchmark the three default proposals lift the photographed product into the top 10 from
  0.87 to 0.93 (standard tier); a crop of the true box reaches about 0.73 ranked first there,
  so the box is no longer what limits (``benchmarks/boxes.py`` measures the boxes).

:func:`search_regions` scores every item by its best region (one ``R x N`` similarity product).
Vectors stay in the pretrained extractor's space, so a learned projection (the tuned approach)
can be applied to them afterwards.
"""

from __future__ import annotations

import dataclasses
import enum
import threading

import numpy as np
from PIL import Image

from imgsim.approaches import boxes as proposals_mod
from imgsim.index.exact import Hits, Index, Metric
from imgsim.ingest.images import clip_box, to_square

#: The CNN's total stride: one feature-map cell per 32x32 input pixels.
STRIDE = 32
#: The most squares a query may embed (``RegionConfig.max_crops``).
MAX_CROPS = 16


class BoxMethod(enum.StrEnum):
    """How :func:`product_box` finds the product in a feature map."""

    CONTRAST = "contrast"  # cells least like the photo's border (the scene around the product)
    ENERGY = "energy"  # cells with the strongest activations


#: A border pixel whose darkest channel is at least this bright is studio white.
STUDIO_WHITE = 236
#: Share of the border that must be studio white for a photo to count as a studio shot.
STUDIO_BORDER_SHARE = 0.9

#: The measured best threshold of each method (phone-photo benchmark, 448 px pass).
BOX_THRESHOLDS = {BoxMethod.CONTRAST: 0.9, BoxMethod.ENERGY: 0.5}


class Fusion(enum.StrEnum):
    """How an item's scores against the query's regions become one score."""

    MAX = "max"  # the best region
    MAX_WHOLE = "max+whole"  # the best region, plus a share of the whole photo's score


@dataclasses.dataclass(frozen=True)
class RegionConfig:
    """How a query photo becomes region vectors.

    Attributes:
        enabled: Region search on; off means today's single whole-photo vector.
        input_size: Long side, in pixels, of the one high-resolution forward pass (the short
            side keeps the aspect, rounded to a multiple of 32).
        scales: Grid window sides as fractions of the image's sides, pooled from that pass;
            each scale tiles the image with half-overlapping windows (1.0 is the whole map).
            Empty for none.
        crop_boxes: Single automatic boxes (:func:`product_box`, the earlier method) cropped
            and embedded at the extractor's size; the first is the query's ``auto_box``.
            Empty for none.
        proposals: Box proposals (:func:`imgsim.approaches.boxes.propose`) as
            ``cue@threshold`` specs, cropped onto white and embedded in the same batch;
            near-duplicates are dropped. The first is the ``auto_box`` when ``crop_boxes`` is
            empty. Empty for none.
        max_crops: At most this many squares are embedded per query (the whole photo, the
            ``crop_boxes`` and the proposals together); it bounds a query's time.
        crop_side: Long side, in pixels, at which the photo is decoded for its crops (a crop
            of a box a third of the photo wide then still has about the extractor's pixels).
        include_whole_square: Add the whole photo embedded as today (made square at the
            extractor's size); it keeps catalogue-like photos finding what they found before.
        studio_shortcut: A photo whose border is studio white (:func:`is_studio_shot`) is
            queried whole, as today: it already looks like the catalogue, and parts of it
            would only find items that share a part.
        fusion: How region scores become an item's score.
        whole_weight: The whole photo's share under ``max+whole`` fusion.
    """

    enabled: bool = True
    input_size: int = 448
    scales: tuple[float, ...] = (1.0, 0.75, 0.5)
    crop_boxes: tuple[BoxMethod, ...] = ()
    proposals: tuple[str, ...] = ("contrast@0.9", "contrast@0.8", "energy@0.5")
    max_crops: int = 6
    crop_side: int = 448
    include_whole_square: bool = True
    studio_shortcut: bool = True
    fusion: Fusion = Fusion.MAX
    whole_weight: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "fusion", Fusion(self.fusion))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "crop_boxes", tuple(BoxMethod(m) for m in self.crop_boxes))
        object.__setattr__(self, "proposals", tuple(str(p) for p in self.proposals))
        for spec in self.proposals:
            proposals_mod.parse_spec(spec)
        fixed = int(self.include_whole_square) + len(self.crop_boxes) + int(bool(self.proposals))
        if not max(1, fixed) <= self.max_crops <= MAX_CROPS:
            raise ValueError(
                f"`max_crops` must be in [{max(1, fixed)}, {MAX_CROPS}] (the whole photo, each crop box and "
                f"at least one proposal). Received: max_crops={self.max_crops}"
            )
        if not 64 <= self.crop_side <= 2048:
            raise ValueError(f"`crop_side` must be in [64, 2048]. Received: crop_side={self.crop_side}")
        if not 64 <= self.input_size <= 1024 or self.input_size % STRIDE:
            raise ValueError(
                f"`input_size` must be a multiple of {STRIDE} in [64, 1024]. Received: input_size={self.input_size}"
            )
        if not all(0.2 <= s <= 1.0 for s in self.scales):
            raise ValueError(f"`scales` must be fractions in [0.2, 1]. Received: scales={self.scales}")
        if self.enabled and not (self.scales or self.crop_boxes or self.proposals or self.include_whole_square):
            raise ValueError("`scales`, `crop_boxes`, `proposals` and `include_whole_square` cannot all be empty "
                             "when regions are enabled. Received: nothing to embed")
        if not 0.0 <= self.whole_weight <= 1.0:
            raise ValueError(f"`whole_weight` must be in [0, 1]. Received: whole_weight={self.whole_weight}")

    def as_dict(self) -> dict:
        """The config as plain JSON values."""
        out = dataclasses.asdict(self)
        out["fusion"] = self.fusion.value
        out["scales"] = list(self.scales)
        out["crop_boxes"] = [m.value for m in self.crop_boxes]
        out["proposals"] = list(self.proposals)
        return out


@dataclasses.dataclass(frozen=True)
class RegionQuery:
    """A query photo as region vectors.

    Attributes:
        vectors: ``(R, dim)`` float32 unit rows in the extractor's space.
        boxes: ``(R, 4)`` int ``(x0, y0, x1, y1)`` of each region in the query's pixels.
        kinds: What each region is: ``whole`` and ``grid`` (pooled), ``whole_square``,
            ``auto_contrast``, ``auto_energy``, ``proposal_contrast`` and ``proposal_energy``
            (cropped and embedded), or ``box`` (a user's).
        auto_box: The automatic product box in the query's pixels, or ``None``.
    """

    vectors: np.ndarray
    boxes: np.ndarray
    kinds: tuple[str, ...]
    auto_box: tuple[int, int, int, int] | None


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def is_studio_shot(rgb: np.ndarray, ring: int = 3) -> bool:
    """Whether a photo's border is studio white (a catalogue-style shot, not a scene).

    Args:
        rgb: ``uint8`` ``(H, W, 3)``.
        ring: Width of the border looked at, in pixels.

    Returns:
        True when at least :data:`STUDIO_BORDER_SHARE` of the border's pixels have every
        channel at or above :data:`STUDIO_WHITE`.
    """
    rgb = _check_rgb(rgb)
    border = np.concatenate([rgb[:ring].reshape(-1, 3), rgb[-ring:].reshape(-1, 3),
                             rgb[:, :ring].reshape(-1, 3), rgb[:, -ring:].reshape(-1, 3)])
    return bool((border.min(axis=1) >= STUDIO_WHITE).mean() >= STUDIO_BORDER_SHARE)


def grid_windows(scales: tuple[float, ...]) -> np.ndarray:
    """R-MAC-style windows in unit coordinates: ``(R, 4)`` ``(x0, y0, x1, y1)`` in [0, 1].

    A scale ``s`` tiles each axis with windows of side ``s`` at a step of at most ``s / 2``
    (1.0 is the whole image, 0.5 a 3x3 grid of half-size windows).
    """
    boxes = []
    for s in scales:
        n = 1 if s >= 1.0 else int(np.ceil((1.0 - s) / (s / 2))) + 1
        starts = np.linspace(0.0, 1.0 - s, n) if n > 1 else np.array([(1.0 - s) / 2])
        boxes.extend((x, y, x + s, y + s) for y in starts for x in starts)
    return np.asarray(boxes, np.float64)


def pool_boxes(feature_map: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Average-pools ``(Hf, Wf, C)`` over boxes in cell units, fractional cells weighted by area.

    Args:
        feature_map: ``(Hf, Wf, C)`` activations.
        boxes: ``(R, 4)`` ``(x0, y0, x1, y1)`` in cells (``0..Wf``, ``0..Hf``).

    Returns:
        ``(R, C)`` float32 unit rows.
    """
    hf, wf, c = feature_map.shape
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cells_x, cells_y = np.arange(wf), np.arange(hf)
    # Overlap of [x0, x1] with each cell [i, i + 1], per axis; their product is the cell's weight.
    wx = np.clip(np.minimum(boxes[:, 2:3], cells_x + 1) - np.maximum(boxes[:, 0:1], cells_x), 0, 1)
    wy = np.clip(np.minimum(boxes[:, 3:4], cells_y + 1) - np.maximum(boxes[:, 1:2], cells_y), 0, 1)
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(len(boxes), hf * wf)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    return _unit(weights.astype(np.float32) @ feature_map.reshape(hf * wf, c).astype(np.float32))


def product_box(feature_map: np.ndarray, image_shape: tuple[int, int],
                method: BoxMethod | str = BoxMethod.CONTRAST,
                threshold: float | None = None) -> tuple[int, int, int, int]:
    """The automatic product box, from the CNN's last feature map.

    Each cell gets a saliency: with ``contrast``, one minus the cosine between the cell's
    features and the mean features of the map's border cells (the scene around a product
    photographed off-centre or not); with ``energy``, its total activation. Cells at least
    ``threshold`` times the most salient cell's value form groups; the box holds the group
    around the most salient cell. On the phone-photo benchmark ``contrast`` at 0.9 finds the
    product best (mean IoU 0.54 with the true box at 448 px; cells are 32 px, so boxes are coarse).

    Args:
        feature_map: ``(Hf, Wf, C)`` activations of an image of ``image_shape``.
        image_shape: ``(height, width)`` of the image the box is returned for.
        method: ``contrast`` or ``energy``.
        threshold: Fraction of the most salient cell's value a cell needs to be in the box;
            :data:`BOX_THRESHOLDS` by default.

    Returns:
        ``(x0, y0, x1, y1)`` in the image's pixels, inside the image (the whole image when
        nothing stands out).
    """
    from scipy import ndimage

    method = BoxMethod(method)
    threshold = BOX_THRESHOLDS[method] if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"`threshold` must be in (0, 1). Received: threshold={threshold}")
    feature_map = np.asarray(feature_map, np.float32)
    hf, wf = feature_map.shape[:2]
    if method is BoxMethod.ENERGY:
        saliency = feature_map.sum(axis=-1)
    else:
        cells = _unit(feature_map)
        border = np.concatenate([cells[0], cells[-1], cells[1:-1, 0], cells[1:-1, -1]]).mean(axis=0)
        saliency = 1.0 - cells @ _unit(border)
    top = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    if saliency[top] <= 1e-6:
        ys, xs = np.array([0, hf - 1]), np.array([0, wf - 1])
    else:
        labels, _ = ndimage.label(saliency >= threshold * saliency[top])
        ys, xs = np.nonzero(labels == labels[top])
    h, w = image_shape
    sx, sy = w / wf, h / hf
    return (int(np.floor(xs.min() * sx)), int(np.floor(ys.min() * sy)),
            min(w, int(np.ceil((xs.max() + 1) * sx))), min(h, int(np.ceil((ys.max() + 1) * sy))))


class RegionEmbedder:
    """Turns a photo into a :class:`RegionQuery` with an EfficientNet-Lite extractor.

    Args:
        extractor_name: The pretrained extractor whose space the store is in.
        config: The regions to use.
    """

    def __init__(self, extractor_name: str = "efficientnet_lite0", config: RegionConfig | None = None) -> None:
        from imgsim.approaches.features import LITE_SPECS, build_lite_feature_map

        if extractor_name not in LITE_SPECS:
            raise ValueError(
                f"`extractor_name` must be one of {', '.join(LITE_SPECS)} (region pooling needs its "
                f"feature map). Received: extractor_name={extractor_name!r}"
            )
        self.extractor_name = extractor_name
        self.config = config or RegionConfig()
        self.image_size = LITE_SPECS[extractor_name].input_size
        self.model, self.fingerprint = build_lite_feature_map(extractor_name, None)
        self._lock = threading.Lock()  # one Keras call at a time; the app shares the embedder

    @property
    def decode_side(self) -> int:
        """The longest side a query needs to be decoded at (JPEG draft mode makes this cheap)."""
        config = self.config
        return max(config.input_size, config.crop_side, self.image_size) if config.enabled else 2 * self.image_size

    def _feature_map(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self.model.predict_on_batch(batch), np.float32)

    def embed_squares(self, squares: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 at the extractor's size -> ``(N, dim)`` whole-image unit vectors,
        equal to the extractor's own."""
        return _unit(self._feature_map(squares).mean(axis=(1, 2)))

    def photo_map(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The one high-resolution pass: the photo at ``input_size`` and its feature map.

        Args:
            rgb: ``uint8`` ``(H, W, 3)`` photo.

        Returns:
            The resized photo (long side ``input_size``, sides multiples of 32, aspect kept) and
            its ``(Hf, Wf, C)`` last feature map.
        """
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        scale = self.config.input_size / max(h, w)
        in_w = max(STRIDE, int(round(w * scale / STRIDE)) * STRIDE)
        in_h = max(STRIDE, int(round(h * scale / STRIDE)) * STRIDE)
        resized = np.asarray(Image.fromarray(rgb).resize((in_w, in_h), Image.Resampling.BILINEAR,
                                                          reducing_gap=2.0))
        return resized, self._feature_map(resized[None])[0]

    def embed(self, rgb: np.ndarray) -> RegionQuery:
        """The region vectors of a photo.

        Args:
            rgb: ``uint8`` ``(H, W, 3)`` photo (decode it with ``max_side=decode_side``).

        Returns:
            :class:`RegionQuery`; with regions disabled, or for a studio shot under
            ``studio_shortcut``, the whole photo made square only.
        """
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        config = self.config
        full = (0, 0, w, h)
        if not config.enabled or (config.studio_shortcut and is_studio_shot(rgb)):
            vector = self.embed_squares(to_square(rgb, self.image_size)[None])
            return RegionQuery(vector, np.asarray([full]), ("whole_square",), None)
        resized, fmap = self.photo_map(rgb)
        hf, wf = fmap.shape[:2]
        vectors, boxes, kinds = [], [], []
        if config.scales:
            unit_boxes = grid_windows(config.scales)
            vectors.append(pool_boxes(fmap, unit_boxes * (wf, hf, wf, hf)))
            boxes.append(np.rint(unit_boxes * (w, h, w, h)).astype(np.int64))
            kinds += ["whole" if (b[2] - b[0]) >= 1.0 else "grid" for b in unit_boxes]
        squares, square_boxes = [], []
        if config.include_whole_square:
            squares.append(to_square(rgb, self.image_size))
            square_boxes.append(full)
            kinds.append("whole_square")
        auto = None
        found = [(product_box(fmap, (h, w), method), f"auto_{method.value}") for method in config.crop_boxes]
        if config.proposals:
            found += [(box, f"proposal_{cue.value}") for box, cue in
                      proposals_mod.propose(fmap, (h, w), config.proposals,
                                            config.max_crops - len(squares) - len(found), resized)]
        for box, kind in found:
            auto = auto or box
            x0, y0, x1, y1 = box
            squares.append(to_square(rgb[y0:y1, x0:x1], self.image_size))
            square_boxes.append(box)
            kinds.append(kind)
        if squares:
            vectors.append(self.embed_squares(np.stack(squares)))
            boxes.append(np.asarray(square_boxes, np.int64))
        return RegionQuery(np.vstack(vectors), np.vstack(boxes), tuple(kinds), auto)

    def embed_box(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> RegionQuery:
        """The vector of a user's box: the crop, made square at the extractor's size, embedded.

        Args:
            rgb: ``uint8`` ``(H, W, 3)`` photo.
            box: ``(x0, y0, x1, y1)`` in its pixels (clipped to the image).

        Raises:
            ValueError: The box covers less than 2x2 pixels of the image.
        """
        rgb = _check_rgb(rgb)
        x0, y0, x1, y1 = clip_box(box, rgb.shape[:2])
        vector = self.embed_squares(to_square(rgb[y0:y1, x0:x1], self.image_size)[None])
        return RegionQuery(vector, np.asarray([(x0, y0, x1, y1)]), ("box",), None)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 2:
        raise ValueError(f"`rgb` must be a uint8 array of shape (H, W, 3). Received: {rgb.dtype} {rgb.shape}")
    return rgb


def fuse(scores: np.ndarray, fusion: Fusion | str = Fusion.MAX, kinds: tuple[str, ...] | None = None,
         whole_weight: float = 0.5) -> np.ndarray:
    """``(R, N)`` region scores -> ``(N,)`` item scores.

    ``max`` takes each item's best region. ``max+whole`` adds ``whole_weight`` times the whole
    photo's score (the ``whole_square`` region, else the first) and divides by ``1 + whole_weight``.
    """
    fusion = Fusion(fusion)
    best = scores.max(axis=0)
    if fusion is Fusion.MAX:
        return best
    whole = kinds.index("whole_square") if kinds and "whole_square" in kinds else 0
    return (best + whole_weight * scores[whole]) / (1.0 + whole_weight)


def search_regions(index: Index, vectors: np.ndarray, k: int, mask: np.ndarray | None = None,
                   exclude: int | np.ndarray | list[int] | None = None,
                   fusion: Fusion | str = Fusion.MAX, *, kinds: tuple[str, ...] | None = None,
                   whole_weight: float = 0.5) -> Hits:
    """The ``k`` items whose best region score is highest (one query of ``R`` regions).

    Args:
        index: The catalogue's index (cosine or euclidean).
        vectors: ``(R, dim)`` region vectors (or ``(dim,)`` for one).
        k: How many results; fewer come back when fewer items are eligible.
        mask: Optional ``(N,)`` bool: only items where it is True are eligible.
        exclude: Rows to leave out (an int or a list; ``-1`` is ignored).
        fusion: How region scores become an item's score (:class:`Fusion`).
        kinds: The regions' kinds (for ``max+whole``), as in :class:`RegionQuery`.
        whole_weight: The whole photo's share under ``max+whole``.

    Returns:
        :class:`imgsim.index.exact.Hits` with one row: ``rows`` best first (ties to the lower row)
        and ``scores`` (fused cosine, or the euclidean distance of the best region).

    Raises:
        ValueError: ``k <= 0``, no vectors, or shapes that do not match the index.
    """
    if k <= 0:
        raise ValueError(f"`k` must be >= 1. Received: k={k}")
    vectors = np.atleast_2d(np.asarray(vectors, np.float32))
    if len(vectors) == 0:
        raise ValueError(f"`vectors` must hold at least one region. Received shape: {vectors.shape}")
    score = fuse(index.scores(vectors), fusion, kinds, whole_weight).astype(np.float64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (index.size,):
            raise ValueError(f"`mask` must have shape ({index.size},). Received: {mask.shape}")
        score[~mask] = -np.inf
    if exclude is not None:
        rows = np.asarray(exclude, np.int64).reshape(-1)
        score[rows[rows >= 0]] = -np.inf
    order = np.lexsort((np.arange(index.size), -score))
    order = order[np.isfinite(score[order])][:k]
    best = score[order]
    if index.metric is Metric.EUCLIDEAN:
        best = np.sqrt(np.maximum(-best, 0.0))
    return Hits(order[None].astype(np.int64), best[None].astype(np.float32))
