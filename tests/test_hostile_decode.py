"""Decoding amplifiers (issue 24): small files whose decoding cost memory or time out of proportion,
and images too small or thin to search. Each ends in a plain refusal or the right picture, with
the memory of a decode bounded (measured in a fresh process)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import exif_jpeg, marked
from PIL import Image

from imgsim.ingest import metadata
from imgsim.ingest.images import (
    ImageDecodeError,
    ImageTooLargeError,
    ImageTooSmallError,
    clip_box,
    decode_image,
)

HOSTILE = Path(__file__).parent / "hostile"
sys.path.insert(0, str(HOSTILE))
import make_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Peak RSS a decode of one corpus file may add, in MB. A normal query decodes in a few MB; on
#: the old code the EXIF bombs added about 1,100 MB and the TIFF tag bomb about 1,000 MB.
RSS_LIMIT_MB = 150


@pytest.mark.parametrize("name", sorted(make_corpus.amplifiers()))
def test_each_amplifier_is_refused_in_plain_words_or_decoded_upright(name):
    data, word = make_corpus.amplifiers()[name]
    if word:
        with pytest.raises(ImageDecodeError, match=word) as info:
            decode_image(data, max_side=448)
        assert "\n" not in str(info.value) and "`rgb`" not in str(info.value)
    else:  # stored 48 wide and 32 high with orientation 6: upright it is 32 wide, 48 high
        assert decode_image(data, max_side=448).shape == (48, 32, 3)


# One process imports once, then forks a child per file, so each child's peak RSS (ru_maxrss,
# which only grows) measures that file's decode alone.
_MEASURE = """
import json, os, resource, sys
sys.path.insert(0, {hostile!r})
import make_corpus
from imgsim.ingest.images import ImageDecodeError, decode_image
files = make_corpus.amplifiers()
for name in sorted(files):
    pid = os.fork()
    if pid == 0:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_image(files[name][0], max_side=448)
        except ImageDecodeError:
            pass
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
        print(json.dumps([name, grown]), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.mark.timeout(120)
def test_decoding_each_amplifier_adds_little_to_peak_memory():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _MEASURE.format(hostile=str(HOSTILE))], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = dict(json.loads(line) for line in done.stdout.strip().splitlines())
    assert set(grown) == set(make_corpus.amplifiers())
    over = {name: mb for name, mb in grown.items() if mb > RSS_LIMIT_MB}
    assert not over, f"peak RSS grew by more than {RSS_LIMIT_MB} MB: {over}"


def test_pillow_never_parses_the_exif(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Pillow parsed an untrusted EXIF block")

    monkeypatch.setattr(Image.Exif, "load", refuse)
    rgb = decode_image(exif_jpeg(6))
    assert rgb.shape == marked().shape and rgb[2, 2, 1] < 80  # upright: the red mark top-left
    for data in (make_corpus.amplifiers()["exif_bomb.png"][0],
                 make_corpus.amplifiers()["exif_bomb.webp"][0]):
        assert decode_image(data).shape == (48, 32, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", ["PNG", "WEBP"])
def test_png_and_webp_exif_orientation_is_applied(orientation, kind):
    stored = Image.open(io.BytesIO(exif_jpeg(orientation)))  # conftest's, made here: trusted
    buf = io.BytesIO()
    stored.save(buf, format=kind, lossless=True, exif=stored.info["exif"])
    rgb = decode_image(buf.getvalue())
    assert rgb.shape == marked().shape
    assert rgb[2, 2, 1] < 80 and rgb[-3, -3].min() > 200  # the red mark is back top-left


def test_the_orientation_reader_reads_both_byte_orders_and_tolerates_damage():
    exif = Image.Exif()
    exif[0x010F] = "a camera maker"
    exif[0x0112] = 5
    big_endian = exif.tobytes()  # Pillow's own, "Exif\0\0" then a big-endian TIFF
    little_endian = (b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 7, 0)
                     + b"\x00" * 4)
    assert metadata.exif_orientation(big_endian) == 5
    assert metadata.exif_orientation(big_endian[6:]) == 5
    assert metadata.exif_orientation(little_endian) == 7
    assert metadata.exif_orientation(little_endian[:20]) == 1  # cut short: none, and no error
    assert metadata.exif_orientation(b"") == metadata.exif_orientation(b"MM\x00*\xff\xff\xff\xff") == 1


def test_an_ifd_loop_is_read_once():
    payload = make_corpus.exif_tiff(8, loop=True)
    assert metadata.exif_orientation(payload) == 8
    tiff = make_corpus.tiff_with_tags(0, 0)
    metadata.check_tiff(tiff, "x.tiff")  # an ordinary TIFF passes


def test_jpeg_structure_is_counted_and_stripped():
    data = make_corpus.jpeg_with_exif(make_corpus.exif_tiff(3, tags=50, blob=100_000))
    stripped, orientation, scans = metadata.prepare_jpeg(data, "x.jpg")
    assert (orientation, scans) == (3, 1)
    assert stripped == make_corpus._jpeg_of(make_corpus.STORED)  # exactly the file, EXIF removed
    progressive = make_corpus._jpeg_of((64, 64), progressive=True)
    assert metadata.prepare_jpeg(progressive, "p.jpg")[2] >= 6  # a real progression
    assert decode_image(progressive).shape == (64, 64, 3)


def test_scan_work_is_bounded_by_pixels_too():
    metadata.check_scan_work(10, 12_000_000, "photo.jpg")  # a 12 MP progressive photo
    with pytest.raises(metadata.StructureRefusedError, match="too much work"):
        metadata.check_scan_work(90, 50_000_000, "photo.jpg")


@pytest.mark.parametrize("size, word", [((1, 1), "too small: 1x1"), ((7, 5), "too small: 7x5"),
                                        ((30000, 3), "too thin: 30000x3"),
                                        ((3, 300), "too thin: 3x300")])
def test_tiny_and_thin_images_are_refused_naming_their_size(size, word):
    data = make_corpus.thin_png(*size)
    with pytest.raises(ImageTooSmallError, match=word.replace(": ", " to search: ")):
        decode_image(data, max_side=448)


def test_a_thin_picture_shrunk_to_a_small_side_is_padded_not_collapsed():
    rgb = decode_image(make_corpus.thin_png(200, 10), max_side=64)
    assert rgb.shape == (8, 64, 3)  # 64x3 after shrinking, padded with white to 8 rows
    assert rgb[0, 32].min() == 255 and rgb[4, 32].tolist() != [255, 255, 255]
    assert decode_image(make_corpus.thin_png(8, 8)).shape == (8, 8, 3)  # the smallest answered
    # A small thin picture (the demo's 39x7 party horn) is padded to 8, not refused.
    rgb = decode_image(make_corpus.thin_png(39, 7), max_side=448)
    assert rgb.shape == (8, 39, 3) and rgb[:, 20].tolist() != [[255, 255, 255]] * 8


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, 2.5, True])
def test_non_finite_or_fractional_max_side_is_refused(bad):
    with pytest.raises(ValueError, match="max_side"):
        decode_image(make_corpus.small_jpeg(), max_side=bad)


@pytest.mark.parametrize("box", [(0, float("nan"), 10, 10), (0, 0, float("inf"), 10), (0, 0, 10)])
def test_non_finite_boxes_are_refused_in_plain_words(box):
    with pytest.raises(ValueError, match="finite numbers"):
        clip_box(box, (20, 20))


def test_too_large_metadata_keeps_its_error_type():
    data = make_corpus.amplifiers()["tag_bomb.tiff"][0]
    with pytest.raises(ImageTooLargeError, match="tag bomb"):
        decode_image(data)
    assert np.asarray(decode_image(make_corpus.tiff_with_tags(3, 10))).shape == (32, 32, 3)


@pytest.mark.timeout(60)
def test_a_folder_of_amplifiers_builds_and_records_each(tmp_path):
    from imgsim.ingest.catalog import ingest
    from imgsim.ingest.sources import IMAGE_SUFFIXES

    shop = tmp_path / "shop"
    shop.mkdir()
    files = {(name if Path(name).suffix in IMAGE_SUFFIXES else name + ".heif"): value
             for name, value in make_corpus.amplifiers().items()}  # folders do not list .avif
    for name, (data, _) in files.items():
        (shop / name).write_bytes(data)
    rows = ingest(str(shop), tmp_path / "cat").items.set_index("path")
    for name, (_, word) in files.items():
        if word:
            assert rows.loc[name, "status"] == "failed_to_decode", name
            assert word in rows.loc[name, "message"], (name, rows.loc[name, "message"])
        else:
            assert rows.loc[name, "status"] == "ok", (name, rows.loc[name, "message"])


def test_an_avif_exif_item_is_found_and_an_ordinary_one_decodes():
    exif = Image.Exif()
    exif[0x010F] = "a camera maker"
    buf = io.BytesIO()
    Image.new("RGB", make_corpus.STORED, (40, 160, 160)).save(buf, format="AVIF", exif=exif.tobytes())
    data = buf.getvalue()
    assert b"a camera maker" in metadata._heif_exif(data)  # located through iinf and iloc
    metadata.check_heif_exif(data, "x.avif")
    assert decode_image(data).shape == (32, 48, 3)


@pytest.mark.parametrize("kind, turned", [("JPEG", True), ("WEBP", True), ("PNG", False)])
def test_an_xmp_orientation_is_honoured_where_pillow_honoured_it(kind, turned):
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    buf = io.BytesIO()
    Image.new("RGB", make_corpus.STORED, (200, 0, 0)).save(buf, format=kind, xmp=xmp, lossless=True)
    assert decode_image(buf.getvalue()).shape == ((48, 32, 3) if turned else (32, 48, 3))
