"""Decoding: every format and quirk phones and shops send, and clear refusals."""

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import exif_jpeg, marked

from imgsim.ingest.images import (
    MAX_PIXELS,
    EmptyImageError,
    ImageDecodeError,
    ImageTooLargeError,
    NotAFileError,
    NotAnImageError,
    TruncatedImageError,
    decode_image,
    load_square,
    rasterize_svg,
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


# --- Hostile input (issue 14): the allowlist, bounded work, every failure an ImageDecodeError.

HOSTILE = Path(__file__).parent / "hostile"


@pytest.fixture(scope="module")
def corpus():
    sys.path.insert(0, str(HOSTILE))
    import make_corpus

    return make_corpus


@pytest.fixture
def no_subprocess(monkeypatch):
    """Makes starting any process raise, so a decoder that shells out fails loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("a process was started while decoding")

    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)
    monkeypatch.setattr(os, "system", refuse)


@pytest.mark.parametrize("name", ["eps_as.jpg", "ps_as.png", "dos_eps_as.jpg", "pdf_as.jpg"])
def test_disguised_postscript_and_pdf_never_reach_a_decoder(corpus, no_subprocess, name):
    data, word = corpus.FILES[name]
    with pytest.raises(NotAnImageError, match=word):
        decode_image(data)


def test_pillow_can_no_longer_open_eps_in_this_process(corpus, no_subprocess, tmp_path):
    from PIL import EpsImagePlugin, Image, UnidentifiedImageError

    assert not EpsImagePlugin.has_ghostscript()
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(corpus.EPS))  # a plain open, without our formats list
    path = tmp_path / "drawing.eps"
    path.write_bytes(corpus.EPS)
    with pytest.raises(UnidentifiedImageError):
        Image.open(path)  # not even by its extension


@pytest.mark.parametrize("error", [RecursionError, NotImplementedError, struct.error, IndexError,
                                   KeyError, ZeroDivisionError, MemoryError])
def test_any_decoder_exception_becomes_an_image_decode_error(samples, monkeypatch, error):
    from PIL import Image

    def broken(*args, **kwargs):
        raise error("deep inside a decoder")

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(ImageDecodeError, match="red.jpg"):
        decode_image(samples["red.jpg"])


def test_a_9999_square_png_is_refused_from_its_header(corpus):
    with pytest.raises(ImageTooLargeError, match="too large"):
        decode_image(corpus.png_header(9999, 9999))
    assert MAX_PIXELS == 50_000_000


def test_megabytes_of_exif_are_dropped_before_pillow_parses_them(corpus, monkeypatch):
    from PIL import Image

    seen = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: seen.append(len(fp.getvalue())) or real_open(fp, *a, **k))
    data = corpus.huge_exif_jpeg(exif_mb=8)
    rgb = decode_image(data)
    assert rgb.shape == (32, 32, 3)
    assert seen == [len(corpus.small_jpeg())]  # Pillow saw the picture, not the 8 MB of EXIF


def test_ordinary_exif_is_kept(corpus):
    assert decode_image(exif_jpeg(6)).shape[:2] == marked().shape[:2]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name, words", [
    ("fifo.jpg", "named pipe"), ("loop_a.jpg", "symlink loop"), ("zero.jpg", "device"),
    ("folder.jpg", "directory"),
])
def test_paths_must_be_regular_files(corpus, tmp_path, name, words):
    made = corpus.make_specials(tmp_path)
    assert name in made
    with pytest.raises(NotAFileError, match=words) as info:
        decode_image(tmp_path / name)  # a FIFO must not block, /dev/zero must not be read
    assert "\n" not in str(info.value)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(NotAFileError, match="does not exist"):
        decode_image(tmp_path / "nothing.jpg")


@pytest.mark.parametrize("name", ["self_reference.svg", "use_bomb.svg", "deep.svg", "xxe.svg"])
def test_hostile_svgs_are_refused_as_one_item(corpus, no_subprocess, name):
    data, word = corpus.SVGS[name]
    with pytest.raises(ImageDecodeError, match=word):
        rasterize_svg(data, 64, name)


def test_a_plain_svg_is_drawn_and_external_resources_are_not_fetched(corpus, monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise AssertionError("an SVG fetched an external resource")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    rgb = decode_image(rasterize_svg(corpus.SVG_OK, 40))
    assert rgb.shape == (40, 40, 3) and close(rgb[20, 20], (32, 128, 32), 10)
    png = rasterize_svg(corpus.SVG_EXTERNAL, 10)  # drawn without its external images
    assert decode_image(png).shape == (10, 10, 3)


def test_renderer_exceptions_are_caught(monkeypatch, corpus):
    import cairosvg

    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cairosvg, "svg2png", broken)
    with pytest.raises(ImageDecodeError, match="RecursionError"):
        rasterize_svg(corpus.SVG_OK, 10, "x.svg")
