"""Region search: a product pasted into a larger scene comes back first; scoring is a true max."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from imgsim import phonesim
from imgsim.approaches.features import load_extractor
from imgsim.approaches.regions import (
    RegionConfig,
    RegionEmbedder,
    fuse,
    grid_windows,
    is_studio_shot,
    pool_boxes,
    product_box,
    search_regions,
)
from imgsim.index.exact import Index
from imgsim.ingest.images import to_square


@pytest.fixture(scope="module")
def embedder():
    return RegionEmbedder("efficientnet_lite0")


def square_photo(arr: np.ndarray, side: int = 224) -> np.ndarray:
    """A sample photo as a catalogue item: grey to RGB, centre square, ``side`` pixels."""
    arr = np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr[:, :, :3]
    h, w = arr.shape[:2]
    s = min(h, w)
    arr = arr[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((side, side), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def catalogue():
    data = pytest.importorskip("skimage.data")
    names = ["chelsea", "coffee", "rocket", "astronaut", "colorwheel", "camera", "clock",
             "immunohistochemistry", "hubble_deep_field", "coins", "moon", "brick", "gravel", "grass"]
    return {name: square_photo(getattr(data, name)()) for name in names}


def test_pasted_product_comes_back_first_with_regions(embedder, catalogue, monkeypatch):
    names = list(catalogue)
    index = Index(embedder.embed_squares(np.stack([catalogue[n] for n in names])))
    monkeypatch.setattr(phonesim, "_samples", [])  # procedural scenes only: none is in the catalogue
    canvases = [np.full((600, 800, 3), 200, np.uint8)] + [
        phonesim.make_scene(np.random.default_rng(seed), (800, 600)) for seed in range(3)]
    whole_firsts = region_firsts = 0
    for i, product in enumerate(("chelsea", "coffee", "rocket", "astronaut")):
        canvas = Image.fromarray(canvases[i])
        canvas.paste(Image.fromarray(catalogue[product]).resize((240, 240)), (420, 200))  # 40% of 600
        photo = np.asarray(canvas)
        query = embedder.embed(photo)
        with_regions = search_regions(index, query.vectors, 5, kinds=query.kinds).rows[0]
        whole = search_regions(index, embedder.embed_box(photo, (0, 0, 800, 600)).vectors, 5).rows[0]
        target = names.index(product)
        assert with_regions[0] == target, (product, [names[r] for r in with_regions])
        region_firsts += 1
        whole_firsts += int(whole[0] == target)
        x0, y0, x1, y1 = query.auto_box
        assert x0 <= 540 <= x1 and y0 <= 320 <= y1  # the product's centre is in the auto box
    assert whole_firsts <= region_firsts  # the whole-photo query is worse or equal


def test_studio_shots_are_queried_whole(embedder, catalogue):
    white = Image.new("RGB", (800, 600), (255, 255, 255))
    white.paste(Image.fromarray(catalogue["coffee"]).resize((240, 240)), (420, 200))
    photo = np.asarray(white)
    assert is_studio_shot(photo) and not is_studio_shot(catalogue["coffee"])
    query = embedder.embed(photo)
    assert query.kinds == ("whole_square",) and query.auto_box is None
    assert np.allclose(query.vectors, embedder.embed_box(photo, (0, 0, 800, 600)).vectors, atol=1e-5)
    names = list(catalogue)
    index = Index(embedder.embed_squares(np.stack([catalogue[n] for n in names])))
    assert search_regions(index, query.vectors, 3).rows[0][0] == names.index("coffee")


def test_boxes_lie_inside_the_image(embedder):
    rng = np.random.default_rng(0)
    photo = (rng.random((300, 500, 3)) * 255).astype(np.uint8)
    query = embedder.embed(photo)
    assert query.vectors.shape == (len(query.kinds), 1280) and query.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(query.vectors, axis=1), 1.0, atol=1e-5)
    assert query.boxes.shape == (len(query.kinds), 4)
    assert (query.boxes[:, 0] >= 0).all() and (query.boxes[:, 1] >= 0).all()
    assert (query.boxes[:, 2] <= 500).all() and (query.boxes[:, 3] <= 300).all()
    assert (query.boxes[:, 2] > query.boxes[:, 0]).all() and (query.boxes[:, 3] > query.boxes[:, 1]).all()
    x0, y0, x1, y1 = query.auto_box
    assert 0 <= x0 < x1 <= 500 and 0 <= y0 < y1 <= 300


def test_embed_box_of_the_whole_image_is_the_whole_image_vector(embedder, catalogue):
    photo = np.asarray(Image.fromarray(catalogue["coffee"]).resize((320, 240)))
    store_vector = load_extractor("efficientnet_lite0").embed(to_square(photo, 224)[None])[0]
    boxed = embedder.embed_box(photo, (0, 0, 320, 240))
    assert boxed.vectors.shape == (1, 1280)
    assert float(boxed.vectors[0] @ store_vector) > 0.999
    with pytest.raises(ValueError, match="`box`"):
        embedder.embed_box(photo, (400, 0, 500, 10))


def test_disabled_regions_give_the_whole_photo_only(embedder, catalogue):
    off = RegionEmbedder("efficientnet_lite0", RegionConfig(enabled=False))
    query = off.embed(catalogue["rocket"])
    assert query.kinds == ("whole_square",) and query.auto_box is None
    expected = embedder.embed_box(catalogue["rocket"], (0, 0, 224, 224)).vectors
    assert np.allclose(query.vectors, expected, atol=1e-5)


def brute_force(index_matrix, vectors, k, mask=None, exclude=()):
    scores = (vectors @ index_matrix.T).max(axis=0)
    rows = [r for r in np.argsort(-scores, kind="stable") if (mask is None or mask[r]) and r not in exclude]
    return rows[:k], scores


def test_search_regions_is_a_max_over_regions():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(60, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix[7] = matrix[3]  # a tie: the lower row comes first
    index = Index(matrix)
    vectors = rng.normal(size=(5, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[2] = matrix[3]
    mask = rng.random(60) < 0.7
    mask[[3, 7]] = True
    for kwargs, expect_kwargs in [({}, {}), ({"mask": mask}, {"mask": mask}),
                                  ({"exclude": 3}, {"exclude": (3,)}), ({"exclude": [-1, 5]}, {"exclude": (5,)})]:
        hits = search_regions(index, vectors, 10, **kwargs)
        rows, scores = brute_force(matrix, vectors, 10, **expect_kwargs)
        assert hits.rows.shape == (1, 10)
        assert hits.rows[0].tolist() == rows
        assert np.allclose(hits.scores[0], scores[rows], atol=1e-5)
    assert search_regions(index, vectors, 10).rows[0][:2].tolist() == [3, 7]
    assert search_regions(index, vectors, 100).rows.shape == (1, 60)  # k > n
    one = search_regions(index, vectors[0], 4)
    assert one.rows[0].tolist() == index.search(vectors[0], 4).rows[0].tolist()
    with pytest.raises(ValueError, match="`k`"):
        search_regions(index, vectors, 0)
    with pytest.raises(ValueError, match="`mask`"):
        search_regions(index, vectors, 3, mask=np.ones(3, bool))


def test_search_regions_euclidean_returns_distances():
    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(20, 4)).astype(np.float32)
    index = Index(matrix, "euclidean")
    vectors = rng.normal(size=(3, 4)).astype(np.float32)
    hits = search_regions(index, vectors, 3)
    distances = np.linalg.norm(matrix[None] - vectors[:, None], axis=2).min(axis=0)
    assert hits.rows[0].tolist() == np.argsort(distances, kind="stable")[:3].tolist()
    assert np.allclose(hits.scores[0], np.sort(distances)[:3], atol=1e-4)


def test_fusion_with_the_whole_photo():
    scores = np.array([[0.2, 0.9], [0.8, 0.1]], np.float32)
    assert fuse(scores).tolist() == pytest.approx([0.8, 0.9])
    mixed = fuse(scores, "max+whole", ("grid", "whole_square"), whole_weight=1.0)
    assert mixed.tolist() == pytest.approx([0.8, 0.5])


def test_pooling_windows_and_product_box():
    rng = np.random.default_rng(3)
    fmap = rng.random((7, 9, 5)).astype(np.float32)
    whole = fmap.mean(axis=(0, 1))
    assert np.allclose(pool_boxes(fmap, [(0, 0, 9, 7)])[0], whole / np.linalg.norm(whole), atol=1e-6)
    half = fmap[:, :4].mean(axis=(0, 1)) * 4 + fmap[:, 4].mean(axis=0) * 0.5  # 4.5 cells wide
    assert np.allclose(pool_boxes(fmap, [(0, 0, 4.5, 7)])[0], half / np.linalg.norm(half), atol=1e-6)
    assert len(grid_windows(RegionConfig().scales)) == 14
    assert len(grid_windows((1.0,))) == 1 and len(grid_windows((0.5,))) == 9 and len(grid_windows((0.75,))) == 4
    assert (grid_windows((1.0, 0.75, 0.5)) >= 0).all() and (grid_windows((1.0, 0.75, 0.5)) <= 1).all()
    hot = np.zeros((7, 9, 5), np.float32)
    hot[2:5, 3:6] = 1.0
    hot[0, 8] = 0.9  # a separate warm cell is not part of the product
    assert product_box(hot, (224, 288), "energy") == (96, 64, 192, 160)
    scene = np.zeros((7, 9, 5), np.float32)
    scene[..., 0] = 1.0  # the scene's features everywhere ...
    scene[1:4, 5:8] = (0.0, 1.0, 0.0, 0.0, 0.0)  # ... except where the product is
    assert product_box(scene, (224, 288), "contrast") == (160, 32, 256, 128)
    assert product_box(np.ones((7, 9, 5), np.float32), (224, 288)) == (0, 0, 288, 224)  # nothing stands out
    with pytest.raises(ValueError, match="`threshold`"):
        product_box(scene, (224, 288), threshold=1.0)


def test_config_is_validated():
    with pytest.raises(ValueError, match="`input_size`"):
        RegionConfig(input_size=450)
    with pytest.raises(ValueError, match="`scales`"):
        RegionConfig(scales=(0.1,))
    with pytest.raises(ValueError, match="cannot all be empty"):
        RegionConfig(scales=(), crop_boxes=(), proposals=(), include_whole_square=False)
    with pytest.raises(ValueError):
        RegionConfig(crop_boxes=("saliency",))
    assert RegionConfig(scales=(), crop_boxes=("energy",)).as_dict()["crop_boxes"] == ["energy"]
    with pytest.raises(ValueError):
        RegionConfig(fusion="mean")
    assert dataclasses.replace(RegionConfig(), fusion="max+whole").as_dict()["fusion"] == "max+whole"
    with pytest.raises(ValueError, match="`extractor_name`"):
        RegionEmbedder("vgg16_fc1")
