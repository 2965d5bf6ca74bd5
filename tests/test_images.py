"""Decoding: every format and quirk phones and shops send, and clear refusals."""

import io

import numpy as np
import pytest
from conftest import exif_jpeg, marked

from imgsim.images import (
    EmptyImageError,
    ImageDecodeError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    decode_image,
    load_square,
    to_square,
)


def close(pixel, colour, tol=12):
    return np.abs(np.asarray(pixel, int) - np.asarray(colour, int)).max() <= tol


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(orientation):
    rgb = decode_image(exif_jpeg(orientation))
    assert rgb.shape == marked().shape  # 24 x 40 once upright
    assert close(rgb[2, 2], (255, 0, 0), 40)  # the red mark is back in the top-left corner
    assert close(rgb[-3, -3], (255, 255, 255), 20)


@pytest.mark.parametrize("name, colour", [
    ("red.jpg", (220, 20, 20)), ("cmyk.jpg", (255, 0, 0)), ("palette.gif", (0, 200, 0)),
    ("blue.webp", (10, 10, 200)), ("blue.bmp", (10, 10, 200)), ("blue.tiff", (10, 10, 200)),
    ("grey.png", (128, 128, 128)), ("sixteen.png", (128, 128, 128)),
])
def test_formats_and_modes_become_rgb(samples, name, colour):
    rgb = decode_image(samples[name])
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    assert close(rgb[16, 16], colour, 30)


def test_heic(samples):
    if "yellow.heic" not in samples:
        pytest.skip("this pillow-heif build cannot encode HEIF")
    assert close(decode_image(samples["yellow.heic"])[16, 16], (200, 200, 10), 30)


def test_alpha_is_composited_onto_white(samples):
    rgb = decode_image(samples["rgba.png"])
    assert close(rgb[0, 0], (255, 255, 255), 0)  # transparent became white, not black
    assert close(rgb[16, 16], (0, 0, 255), 0)


def test_sources_path_bytes_and_file_object_agree(samples):
    path = samples["gradient.png"]
    data = path.read_bytes()
    a = decode_image(path)
    np.testing.assert_array_equal(a, decode_image(data))
    np.testing.assert_array_equal(a, decode_image(io.BytesIO(data)))


@pytest.mark.parametrize("name, error, words", [
    ("empty.jpg", EmptyImageError, "empty"),
    ("text.jpg", NotAnImageError, "text file"),
    ("page.jpg", NotAnImageError, "HTML page"),
    ("truncated.jpg", TruncatedImageError, "damaged or cut short"),
    ("bomb.png", ImageTooLargeError, "too large"),
])
def test_bad_input_is_refused_with_a_plain_message(samples, name, error, words):
    with pytest.raises(error, match=words) as info:
        decode_image(samples[name])
    assert isinstance(info.value, ImageDecodeError)
    assert name in str(info.value)


def test_large_jpeg_is_drafted_and_shrunk():
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, :2000] = (250, 250, 250)
    rgb = decode_image(io.BytesIO(__import__("conftest").jpeg_bytes(big)), max_side=448)
    assert max(rgb.shape[:2]) == 448 and rgb.shape[:2] == (336, 448)


def test_to_square_pads_with_white_and_resizes():
    rgb = np.zeros((20, 40, 3), np.uint8)
    square = to_square(rgb, 16)
    assert square.shape == (16, 16, 3)
    assert square[0, 8].min() > 240 and square[8, 8].max() < 15  # white band above, content centred
    with pytest.raises(ValueError, match="size"):
        to_square(rgb, 0)


def test_load_square_matches_decode_then_square(samples):
    path = samples["gradient.png"]
    np.testing.assert_array_equal(load_square(path, 24), to_square(decode_image(path, max_side=48), 24))
