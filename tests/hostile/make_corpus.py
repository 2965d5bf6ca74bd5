"""Writes the hostile corpus: files a careless or malicious user could hand to imgsim.

Run ``python tests/hostile/make_corpus.py DIR`` to write it into DIR; tests/test_hostile.py
calls :func:`make_corpus` in a temporary folder. Nothing here is committed as a binary blob:
every file is made from a few lines of code, so a reader can see exactly what each one is.

Layout of DIR::

    files/      single hostile files, each named like an ordinary photo
    specials/   a FIFO, a symlink loop, a link to /dev/zero, a directory named like an image
    zips/       archives that try bombs and path tricks
    amplifiers/ small files that cost a decoder memory or time out of proportion (issue 24)
"""

from __future__ import annotations

import io
import os
import stat
import struct
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

from PIL import Image

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
       b"/hang { { } loop } def hang\nshowpage\n%%EOF\n")
PS = b"%!PS\n{ } loop\n"
DOS_EPS = b"\xc5\xd0\xd3\xc6" + struct.pack("<6I", 30, len(EPS), 0, 0, 0, 0) + b"\xff\xff" + EPS
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, colour: int = 2, depth: int = 8) -> bytes:
    """A PNG that declares ``width x height`` (PNG colour type and bit depth given) but carries
    a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def small_jpeg(colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def huge_exif_jpeg(exif_mb: float = 39.0) -> bytes:
    """A small JPEG preceded by ``exif_mb`` MB of EXIF, split over 64 KB APP1 segments."""
    jpeg = small_jpeg()
    payload = b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + b"\x00" * (65533 - 2 - 14)
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    count = int(exif_mb * 2**20 / len(segment)) + 1
    return jpeg[:2] + segment * count + jpeg[2:]


# --- Decoding amplifiers (issue 24): small files that cost memory or time out of proportion.

#: Tag ids for bomb entries: private-use ids, so no reader gives them a meaning of its own.
_BOMB_TAG = 0xC000


def exif_tiff(orientation: int = 1, tags: int = 0, blob: int = 0, loop: bool = False) -> bytes:
    """A big-endian TIFF header + IFD0, as EXIF carries it: the orientation tag, then ``tags``
    UNDEFINED entries that all point at one shared ``blob``-byte value (a tag bomb). With
    ``loop``, IFD0's next-IFD pointer and an Exif sub-IFD pointer both lead back to IFD0."""
    entries = [(0x0112, 3, 1, struct.pack(">HH", orientation, 0))]
    if loop:
        entries.append((0x8769, 4, 1, struct.pack(">I", 8)))
    count = len(entries) + tags
    blob_at = 8 + 2 + 12 * count + 4
    entries += [(_BOMB_TAG + i, 7, blob, struct.pack(">I", blob_at)) for i in range(tags)]
    ifd = struct.pack(">H", count) + b"".join(
        struct.pack(">HHI", tag, kind, n) + value for tag, kind, n, value in sorted(entries))
    return b"MM\x00*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 8 if loop else 0) + (
        b"\x00" * blob)


def _jpeg_of(size: tuple[int, int], colour=(200, 40, 40), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


#: Bomb pictures are 32 wide and 48 high once upright; stored as 48x32 with orientation 6.
STORED = (48, 32)


def jpeg_with_exif(tiff: bytes, size: tuple[int, int] = STORED) -> bytes:
    """A JPEG whose EXIF is ``tiff``, split over as many APP1 segments as it needs (each one
    starts "Exif\\0\\0"; Pillow joins them)."""
    jpeg = _jpeg_of(size)
    step = 65533 - 2 - 6
    segments = b"".join(
        b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(part)) + b"Exif\x00\x00" + part
        for part in (tiff[i:i + step] for i in range(0, len(tiff), step)))
    return jpeg[:2] + segments + jpeg[2:]


def png_with_exif(tiff: bytes, size: tuple[int, int] = STORED) -> bytes:
    """A PNG with ``tiff`` as its eXIf chunk, just before the pixels."""
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 160, 40)).save(buf, format="PNG")
    png = buf.getvalue()
    at = png.find(b"IDAT") - 4
    return png[:at] + _png_chunk(b"eXIf", tiff) + png[at:]


def webp_with_exif(tiff: bytes, size: tuple[int, int] = STORED) -> bytes:
    """A lossless WebP (extended format) whose EXIF chunk is ``tiff``."""
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 40, 160)).save(buf, format="WEBP", lossless=True,
                                               exif=b"Exif\x00\x00" + tiff)
    return buf.getvalue()


def avif_with_exif(tiff: bytes, size: tuple[int, int] = STORED) -> bytes:
    """An AVIF whose EXIF item is ``tiff``. Pillow re-encodes the EXIF it is given, so a
    placeholder of the same length is saved and then overwritten with ``tiff``."""
    placeholder = Image.Exif()
    placeholder[_BOMB_TAG] = b"\x01" * (len(tiff) - 8 - 2 - 12 - 4)  # header, one entry, next
    raw = placeholder.tobytes()[6:]
    assert len(raw) == len(tiff)
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 160, 160)).save(buf, format="AVIF", exif=b"Exif\x00\x00" + raw)
    data = buf.getvalue()
    at = data.index(raw)
    return data[:at] + tiff + data[at + len(tiff):]


def tiff_with_tags(tags: int, blob: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """An uncompressed TIFF whose own IFD0 gains ``tags`` entries pointing at one shared blob."""
    buf = io.BytesIO()
    Image.new("RGB", size, (160, 40, 160)).save(buf, format="TIFF")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"II*\x00"
    (first,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, first)
    entries = [bytes(data[first + 2 + 12 * i:first + 14 + 12 * i]) for i in range(count)]
    blob_at = len(data)
    data += b"\x00" * blob
    entries += [struct.pack("<HHII", _BOMB_TAG + i, 7, blob, blob_at) for i in range(tags)]
    entries.sort(key=lambda entry: struct.unpack_from("<H", entry)[0])
    ifd_at = len(data)
    data += struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    struct.pack_into("<I", data, 4, ifd_at)
    return bytes(data)


def comment_flood_jpeg(megabytes: float = 8.0) -> bytes:
    """A 32x32 JPEG preceded by ``megabytes`` MB of empty COM (comment) segments, 4 bytes each:
    two million segments, each of which Pillow keeps as a Python object."""
    jpeg = small_jpeg()
    return jpeg[:2] + b"\xff\xfe\x00\x02" * int(megabytes * 2**20 / 4) + jpeg[2:]


def scan_bomb_jpeg(scans: int = 3000, size: tuple[int, int] = (2048, 2048)) -> bytes:
    """A progressive JPEG whose last scan (an AC refinement pass) is repeated ``scans`` times.

    A flat colour compresses each pass to a few bytes, so the file stays small while a decoder
    walks every block of the image once per scan.
    """
    jpeg = _jpeg_of(size, (90, 120, 150), progressive=True)
    last = jpeg.rfind(b"\xff\xda")
    end = jpeg.rfind(b"\xff\xd9")
    return jpeg[:last] + jpeg[last:end] * scans + jpeg[end:]


def thin_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def thin_jpeg(width: int, height: int) -> bytes:
    return _jpeg_of((width, height), (30, 90, 200))


#: name -> (bytes, the word a refusal must say, or "" where the image must decode upright,
#: as a 32x48 picture: the EXIF bombs carry orientation 6 beside their bomb).
AMPLIFIERS: dict[str, tuple[bytes, str]] = {}


def amplifiers() -> dict[str, tuple[bytes, str]]:
    """The decoding amplifiers (made on first use: a few of them take a second to build)."""
    if not AMPLIFIERS:
        bomb = exif_tiff(6, tags=2000, blob=300_000)
        AMPLIFIERS.update({
            "exif_bomb.jpg": (jpeg_with_exif(bomb), ""),
            "exif_bomb.png": (png_with_exif(bomb), ""),
            "exif_bomb.webp": (webp_with_exif(bomb), ""),
            "tag_bomb.tiff": (tiff_with_tags(900, 600_000), "too large"),
            "exif_bomb.avif": (avif_with_exif(bomb), "too large"),
            "rgba_30mp.png": (png_header(6000, 5000, colour=6), "MB of memory"),
            "grey16_24mp.png": (png_header(6000, 4000, colour=0, depth=16), "MB of memory"),
            "exif_loop.jpg": (jpeg_with_exif(exif_tiff(6, loop=True)), ""),
            "comment_flood.jpg": (comment_flood_jpeg(), "segments"),
            "scan_bomb.jpg": (scan_bomb_jpeg(), "scans"),
            "one_by_one.jpg": (thin_jpeg(1, 1), "too small"),
            "one_by_one.png": (thin_png(1, 1), "too small"),
            "one_by_30000.png": (thin_png(1, 30000), "too thin"),
            "30000_by_one.png": (thin_png(30000, 1), "too thin"),
            "30000_by_3.jpg": (thin_jpeg(30000, 3), "too thin"),
        })
    return AMPLIFIERS


SVG_SELF = (b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            b'width="10" height="10"><g id="a"><rect width="5" height="5"/>'
            b'<use xlink:href="#a"/></g></svg>')


def svg_use_bomb(levels: int = 9, fan: int = 10) -> bytes:
    """Each level draws the previous one ``fan`` times: ``fan ** levels`` rectangles."""
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
             'width="10" height="10"><defs><rect id="l0" width="1" height="1"/>']
    for level in range(1, levels + 1):
        uses = "".join(f'<use xlink:href="#l{level - 1}"/>' for _ in range(fan))
        parts.append(f'<g id="l{level}">{uses}</g>')
    parts.append(f'</defs><use xlink:href="#l{levels}"/></svg>')
    return "".join(parts).encode()


def svg_deep(depth: int = 20000) -> bytes:
    """Nesting deep enough to exhaust Python's recursion in a renderer."""
    return (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">' + b"<g>" * depth
            + b'<rect width="1" height="1"/>' + b"</g>" * depth + b"</svg>")


SVG_XXE = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&x;</text></svg>')
SVG_EXTERNAL = (b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                b'width="10" height="10"><image xlink:href="file:///etc/passwd" width="10" '
                b'height="10"/><image xlink:href="http://127.0.0.1:9/x.png" width="1" height="1"/>'
                b'</svg>')
SVG_OK = (b'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
          b'<rect width="20" height="20" fill="#208020"/></svg>')

#: name -> (bytes, what decode_image must say about it: a word of the message)
FILES: dict[str, tuple[bytes, str]] = {
    "eps_as.jpg": (EPS, "PostScript"),
    "ps_as.png": (PS, "PostScript"),
    "dos_eps_as.jpg": (DOS_EPS, "PostScript"),
    "pdf_as.jpg": (PDF, "PDF"),
    "svg_as.png": (SVG_OK, "SVG"),
    "dds_as.jpg": (b"DDS " + struct.pack("<I", 124) + b"\x00" * 120, "not in an image format"),
    "html_as.jpg": (b"<!DOCTYPE html><html><body>Login</body></html>", "HTML"),
    "empty.jpg": (b"", "empty"),
    "truncated.jpg": (small_jpeg()[:120], "damaged"),
    "header_9999.png": (png_header(9999, 9999), "too large"),
    "header_60000.png": (png_header(60000, 60000), "too large"),
}
#: SVGs for folder sources: name -> a word of the per-item message
SVGS: dict[str, tuple[bytes, str]] = {
    "self_reference.svg": (SVG_SELF, "refers to itself"),
    "use_bomb.svg": (svg_use_bomb(), "expands"),
    "deep.svg": (svg_deep(), "nested too deeply"),
    "xxe.svg": (SVG_XXE, "SVG"),
}


def _zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)


#: The hostile archives: name -> a word of the refusal message (with ZipLimits(max_entries=2000)).
ZIPS = {"bomb.zip": "ratio", "slip.zip": "leaves the archive", "absolute.zip": "absolute",
        "symlink.zip": "symbolic link", "collision.zip": "both a file and a folder",
        "duplicate.zip": "twice", "many.zip": "entries", "not_a.zip": "not a valid zip",
        "liar.zip": "damaged"}


def make_zips(out: Path, bomb_mb: int = 64) -> dict[str, str]:
    """Writes the hostile archives; returns :data:`ZIPS`."""
    out.mkdir(parents=True, exist_ok=True)
    jpeg = small_jpeg()
    expected = {}
    # Ratio bomb: one entry of zeros, about 1000:1.
    with zipfile.ZipFile(out / "bomb.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("zeros.bmp", "w", force_zip64=True) as entry:
            block = b"\x00" * 2**20
            for _ in range(bomb_mb):
                entry.write(block)
    expected["bomb.zip"] = "ratio"
    _zip(out / "slip.zip", [("ok.jpg", jpeg), ("../../evil.jpg", jpeg)])
    expected["slip.zip"] = "leaves the archive"
    _zip(out / "absolute.zip", [("/tmp/evil.jpg", jpeg)])
    expected["absolute.zip"] = "absolute"
    link = zipfile.ZipInfo("link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    _zip(out / "symlink.zip", [("ok.jpg", jpeg), (link, b"/etc/passwd")])
    expected["symlink.zip"] = "symbolic link"
    _zip(out / "collision.zip", [("x", jpeg), ("x/y.jpg", jpeg)])
    expected["collision.zip"] = "both a file and a folder"
    with warnings.catch_warnings():  # zipfile warns about the duplicate, which is the point
        warnings.simplefilter("ignore", UserWarning)
        _zip(out / "duplicate.zip", [("a.jpg", jpeg), ("a.jpg", jpeg)])
    expected["duplicate.zip"] = "twice"
    _zip(out / "many.zip", [(f"f{i}.jpg", b"") for i in range(2001)])
    expected["many.zip"] = "entries"
    (out / "not_a.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    expected["not_a.zip"] = "not a valid zip"
    # Declared sizes that lie: the central directory says 10 bytes, the data is 1 MB.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("liar.bmp", b"\x00" * 2**20)
    data = bytearray(buf.getvalue())
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 10)  # uncompressed size
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, 10)
    (out / "liar.zip").write_bytes(bytes(data))
    expected["liar.zip"] = "damaged"
    assert expected == ZIPS
    return expected


def make_specials(out: Path) -> dict[str, str]:
    """A FIFO, a symlink loop, a link to /dev/zero, a directory: name -> a word of the message."""
    out.mkdir(parents=True, exist_ok=True)
    made = {}
    os.mkfifo(out / "fifo.jpg")
    made["fifo.jpg"] = "FIFO"
    os.symlink("loop_b.jpg", out / "loop_a.jpg")
    os.symlink("loop_a.jpg", out / "loop_b.jpg")
    made["loop_a.jpg"] = "symlink loop"
    os.symlink("/dev/zero", out / "zero.jpg")
    made["zero.jpg"] = "device"
    (out / "folder.jpg").mkdir()
    made["folder.jpg"] = "directory"
    return made


def make_corpus(out: str | os.PathLike, bomb_mb: int = 64, exif_mb: float = 39.0) -> Path:
    """Writes the whole corpus under ``out`` and returns it."""
    out = Path(out)
    (out / "files").mkdir(parents=True, exist_ok=True)
    for name, (data, _) in {**FILES, **SVGS}.items():
        (out / "files" / name).write_bytes(data)
    (out / "files" / "huge_exif.jpg").write_bytes(huge_exif_jpeg(exif_mb))
    (out / "amplifiers").mkdir(exist_ok=True)
    for name, (data, _) in amplifiers().items():
        (out / "amplifiers" / name).write_bytes(data)
    make_specials(out / "specials")
    make_zips(out / "zips", bomb_mb)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/hostile/make_corpus.py DIR")
    print(make_corpus(sys.argv[1]))
