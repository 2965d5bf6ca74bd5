"""The phone-photo simulator: reproducible, the right sizes, the box where the product is."""

import numpy as np
import pytest

from imgsim import phonesim
from imgsim.phonesim import SimulatedPhoto, make_scene, product_mask, simulate_photo


def studio_shot(size: int = 64) -> np.ndarray:
    """A red product with a white (studio) patch inside its outline, on pure white."""
    arr = np.full((size, size, 3), 255, np.uint8)
    q = size // 4
    arr[q:3 * q, q:3 * q] = (200, 30, 30)
    arr[q + 4:q + 8, q + 4:q + 8] = 255  # white inside the product stays product
    return arr


def test_product_mask_cuts_the_white_background():
    mask = product_mask(studio_shot())
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert mask[:10].max() == 0.0 and mask[:, -10:].max() == 0.0
    assert mask[20:44, 20:44].min() == 1.0  # the white patch inside is kept


def test_product_mask_keeps_images_without_a_studio_background():
    assert product_mask(np.full((16, 16, 3), 90, np.uint8)).min() == 1.0
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    assert product_mask(rgba).min() == 1.0


@pytest.mark.parametrize("hard", [False, True])
def test_simulate_photo_is_seeded_and_sized(hard):
    product = studio_shot()
    a = simulate_photo(product, np.random.default_rng(7), size=(120, 90), hard=hard)
    b = simulate_photo(product, np.random.default_rng(7), size=(120, 90), hard=hard)
    c = simulate_photo(product, np.random.default_rng(8), size=(120, 90), hard=hard)
    assert isinstance(a, SimulatedPhoto)
    assert a.rgb.shape == (90, 120, 3) and a.rgb.dtype == np.uint8
    assert np.array_equal(a.rgb, b.rgb) and a.box == b.box
    assert not np.array_equal(a.rgb, c.rgb)


def test_box_lies_inside_the_frame_and_holds_the_product():
    product = studio_shot()
    for seed in range(12):
        photo = simulate_photo(product, np.random.default_rng(seed), size=(160, 120), hard=seed % 2 == 1)
        x0, y0, x1, y1 = photo.box
        assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120
        if seed % 2 == 0:  # the standard tier: product at 35-65% of the frame, fully inside
            assert 0.3 <= max((x1 - x0) / 160, (y1 - y0) / 120) <= 0.75
            inside = photo.rgb[y0:y1, x0:x1].astype(int)
            assert (inside[..., 0] - inside[..., 1]).mean() > 20  # it is the red product


def test_large_photo_is_upscaled_from_the_working_size():
    photo = simulate_photo(studio_shot(), np.random.default_rng(0), size=(2000, 1500))
    assert photo.rgb.shape == (1500, 2000, 3)
    assert photo.box[2] <= 2000 and photo.box[3] <= 1500


def test_scene_sizes_and_procedural_fallback(monkeypatch):
    scene = make_scene(np.random.default_rng(0), (50, 30))
    assert scene.shape == (30, 50, 3) and scene.dtype == np.uint8
    monkeypatch.setattr(phonesim, "_samples", [])  # as if scikit-image were missing
    for seed in range(6):
        assert make_scene(np.random.default_rng(seed), (40, 40)).shape == (40, 40, 3)


def test_given_scene_and_bad_input():
    scene = np.zeros((10, 20, 3), np.uint8)
    photo = simulate_photo(studio_shot(), np.random.default_rng(0), size=(64, 48), scene=scene)
    assert photo.rgb.shape == (48, 64, 3)
    with pytest.raises(ValueError, match="`size`"):
        simulate_photo(studio_shot(), np.random.default_rng(0), size=(4, 4))
    with pytest.raises(ValueError, match="`product`"):
        simulate_photo(np.zeros((8, 8), np.uint8), np.random.default_rng(0))
