"""Box proposals: a pasted product is among them; the crop bound holds; degenerate photos give the whole image."""

import copy

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgsim import phonesim
from imgsim.approaches import boxes
from imgsim.approaches.regions import MAX_CROPS, RegionConfig, RegionEmbedder


@pytest.fixture(scope="module")
def embedder():
    return RegionEmbedder("efficientnet_lite0")


def with_config(embedder: RegionEmbedder, **changes) -> RegionEmbedder:
    """The embedder (its loaded model shared) with another RegionConfig."""
    other = copy.copy(embedder)
    other.config = RegionConfig(**changes)
    return other


def product(side: int = 220) -> np.ndarray:
    """A studio-style product: a striped, buttoned shirt-like shape on white."""
    im = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    draw.polygon([(40, 20), (180, 20), (210, 80), (175, 90), (175, 210), (45, 210), (45, 90), (10, 80)],
                 fill=(200, 30, 40))
    for y in range(30, 210, 24):
        draw.rectangle([45, y, 175, y + 8], fill=(20, 40, 160))
    for y in range(40, 200, 36):
        draw.ellipse([104, y, 116, y + 12], fill=(250, 220, 0))
    return np.asarray(im)


def pasted(seed: int, at: tuple[int, int], side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The product pasted (its white cut away) on a procedural scene of 800x600; its true box."""
    scene = phonesim.make_scene(np.random.default_rng(seed), (800, 600))
    item = np.asarray(Image.fromarray(product()).resize((side, side), Image.Resampling.BICUBIC))
    mask = phonesim.product_mask(item) > 0.5
    x, y = at
    region = scene[y:y + side, x:x + side]
    region[mask] = item[mask]
    ys, xs = np.nonzero(mask)
    return scene, (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)


@pytest.mark.parametrize("seed,at,side", [(0, (420, 200), 260), (1, (80, 150), 300), (2, (300, 60), 240)])
def test_a_pasted_product_is_among_the_proposals(embedder, monkeypatch, seed, at, side):
    monkeypatch.setattr(phonesim, "_samples", [])  # procedural scenes only, offline and fast
    photo, truth = pasted(seed, at, side)
    found = boxes.propose(embedder.photo_map(photo)[1], photo.shape[:2], RegionConfig().proposals, 8, photo)
    best = max(boxes.iou(box, truth) for box, _ in found)
    assert best >= 0.7, (truth, found)
    whole = boxes.iou((0, 0, 800, 600), truth)
    assert whole < 0.3  # the whole photo would not pass: the proposals found the product


def test_the_crop_count_bound_holds(embedder, monkeypatch):
    monkeypatch.setattr(phonesim, "_samples", [])
    photo, _ = pasted(0, (420, 200), 260)
    specs = ("contrast@0.95", "contrast@0.9", "contrast@0.8", "contrast@0.6", "energy@0.5", "energy@0.3")
    cropped = {"whole_square", "proposal_contrast", "proposal_energy"}
    many = sum(kind in cropped for kind in with_config(embedder, proposals=specs, max_crops=MAX_CROPS).embed(photo).kinds)
    assert many > 3  # these specs give distinct boxes, so a bound of 3 has something to cut
    query = with_config(embedder, proposals=specs, max_crops=3).embed(photo)
    assert sum(kind in cropped for kind in query.kinds) == 3
    assert query.kinds.count("whole_square") == 1 and query.auto_box is not None
    with pytest.raises(ValueError, match=r"`max_crops` must be in \[2, 16\] .*Received: max_crops=17"):
        RegionConfig(max_crops=17)
    with pytest.raises(ValueError, match=r"Received: max_crops=2"):  # whole photo + 2 boxes + a proposal
        RegionConfig(crop_boxes=("contrast", "energy"), max_crops=2)
    with pytest.raises(ValueError, match="cue@threshold"):
        RegionConfig(proposals=("saliency@0.5",))
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\). Received: 'energy@1.5'"):
        RegionConfig(proposals=("energy@1.5",))


@pytest.mark.parametrize("photo", [np.full((600, 800, 3), 128, np.uint8), np.full((300, 200, 3), 255, np.uint8),
                                   np.zeros((2, 2, 3), np.uint8), np.full((5, 40, 3), 90, np.uint8)],
                         ids=["grey", "white", "2x2", "5x40"])
def test_degenerate_photos_give_the_whole_image(embedder, photo):
    query = embedder.embed(photo)  # studio white is queried whole; the others go through proposals
    h, w = photo.shape[:2]
    assert query.auto_box in (None, (0, 0, w, h))
    assert np.isfinite(query.vectors).all()
    found = boxes.propose(embedder.photo_map(photo)[1], (h, w), RegionConfig().proposals, 4, photo)
    assert [box for box, _ in found] == [(0, 0, w, h)]


def test_degenerate_maps_give_the_whole_image():
    shape = (300, 400)
    for fmap in (np.zeros((10, 14, 8), np.float32), np.ones((10, 14, 8), np.float32),
                 np.full((10, 14, 8), np.nan, np.float32), np.ones((1, 1, 8), np.float32), np.zeros((0, 0, 8))):
        for cue in boxes.Cue:
            assert boxes.propose(fmap, shape, (f"{cue.value}@0.5",), 3) == [((0, 0, 400, 300), cue)]


def test_a_hot_block_is_boxed_where_it_is():
    fmap = np.full((10, 14, 4), 0.1, np.float32)
    fmap[..., 0] = 1.0  # the scene's direction
    fmap[3:7, 8:12] = (0.0, 2.0, 1.0, 0.0)  # the product: another direction, more energy
    for cue in boxes.Cue:
        (box, _), = boxes.propose(fmap, (320, 448), (f"{cue.value}@0.7",), 1)
        assert boxes.iou(box, (8 * 32, 3 * 32, 12 * 32, 7 * 32)) >= 0.8, (cue, box)
    with pytest.raises(ValueError, match="`limit`"):
        boxes.propose(fmap, (320, 448), ("energy@0.5",), 0)
