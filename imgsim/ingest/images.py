"""The one place where input becomes pixels.

Every image that enters imgsim (a catalogue file, a downloaded body, an upload, a camera shot)
goes through :func:`decode_image`, which returns an RGB ``uint8`` array or raises an
:class:`ImageDecodeError` whose message says, in plain words, what was wrong. Model inputs are
made from those arrays by :func:`to_square`, so indexing and querying see the same pixels.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import (
    BmpImagePlugin,  # noqa: F401 - registers the formats we allow, and only those
    EpsImagePlugin,
    GifImagePlugin,  # noqa: F401
    Image,
    JpegImagePlugin,  # noqa: F401
    MpoImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from imgsim.errors import ImgsimError
from imgsim.ingest import metadata, safety
from imgsim.ingest.boxes import clip_box, crop  # noqa: F401 - part of this module's API
from imgsim.ingest.metadata import MAX_EXIF_BYTES  # noqa: F401 - part of this module's API

try:  # AVIF, when this Pillow was built with libavif.
    from PIL import AvifImagePlugin  # noqa: F401
except ImportError:  # pragma: no cover - Pillow 12 wheels include it
    pass

try:  # HEIC/HEIF (iPhone photos); optional so that a missing wheel only disables that format.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    HEIF_SUPPORTED = False

# Pillow's EPS plugin runs Ghostscript (`gs`) to draw PostScript, and Pillow would load it for
# any file that starts with "%!PS", whatever its name. It is imported here only to disarm it:
# with no Ghostscript binary it can never start a process, and unregistered, Image.open (ours
# or anyone's in this process) never picks it. Its extension hints are dropped so that opening
# "x.eps" by name does not re-import anything either.
EpsImagePlugin.gs_binary = False
EpsImagePlugin.gs_windows_binary = False
for _format in ("EPS",):
    Image.OPEN.pop(_format, None)
    if _format in Image.ID:
        Image.ID.remove(_format)
for _ext in (".ps", ".eps", ".pdf"):
    getattr(Image, "_EXTENSION_PLUGIN", {}).pop(_ext, None)
    Image.EXTENSION.pop(_ext, None)

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

#: Largest image accepted, in pixels: 50 MP covers every phone and most cameras (a 12 MP phone
#: photo is ~12e6, a 48 MP one ~48e6) and caps the decoded RGB array at 150 MB. A 9999x9999
#: header (100 MP) is refused before any pixel is decoded.
MAX_PIXELS = 50_000_000
#: Most memory one decode may take, estimated before decoding from the size and the mode (see
#: _peak_bytes). Half a GB: the app's whole query path peaks near 0.9 GB, so a few uploads at
#: once stay within a small server. Binding only for transparency (about 25 MP), 16-bit
#: (about 20 MP) and WebP pictures; an 8-bit RGB one meets MAX_PIXELS first.
MAX_DECODE_BYTES = 512 * 2**20
#: Largest encoded file accepted, in bytes.
MAX_BYTES = 64 * 1024 * 1024
#: Smallest picture answered, in pixels: one whose longest side is under 8 (one JPEG block)
#: shows no shape at all ("too small to search: 1x1 pixels"). A short side under it (a 39x7
#: party horn among the demo's stamps) is padded with white to it, since the region search
#: needs a few pixels each way.
MIN_SIDE = 8
#: Longest side over shortest side accepted. A phone panorama is about 8:1 at most; past 20:1
#: the model's square holds a strip under 12 of its 224 rows (30000x3 becomes 448x1), which
#: carries nothing to match: "too thin to search: 30000x3 pixels".
MAX_ASPECT = 20

# Our own pixel limit is checked before decoding; Pillow's bomb guard stays on as a second net.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

#: The formats we decode, by the name Pillow gives them; everything else is refused by its bytes.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "TIFF", "WEBP", "HEIF", "AVIF")
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                          b"mif1", b"msf1", b"mif2", b"avif", b"avis"})


class ImageDecodeError(ImgsimError, ValueError):
    """The input could not be turned into an RGB image; the message says why."""


class EmptyImageError(ImageDecodeError):
    """The input has no bytes at all."""


class NotAnImageError(ImageDecodeError):
    """The input is some other kind of data (HTML, text, an unknown format)."""


class TruncatedImageError(ImageDecodeError):
    """The input starts like an image but its data ends early or is damaged."""


class ImageTooLargeError(ImageDecodeError):
    """The input is too large to decode safely (file size or a decompression bomb)."""


class ImageTooSmallError(ImageDecodeError):
    """The picture is too small or too thin to search (a side under MIN_SIDE, or past MAX_ASPECT)."""


class NotAFileError(ImageDecodeError):
    """The path is a directory, FIFO, device, socket or symlink loop, or cannot be read."""


def sniff_format(data: bytes) -> tuple[str, ...]:
    """The Pillow formats that may open ``data``, judged from its first bytes; ``()`` if none.

    Only the allowlisted formats are recognised; PostScript, PDF, SVG and the long tail of
    formats Pillow can read are not.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return ("JPEG", "MPO")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ("PNG",)
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ("GIF",)
    if data.startswith(b"BM") and len(data) >= 26:
        return ("BMP",)
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return ("TIFF",)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ("WEBP",)
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return ("HEIF", "AVIF") if data[8:12] not in (b"avif", b"avis") else ("AVIF", "HEIF")
    return ()


def _read_bytes(source: ImageSource) -> tuple[bytes, str]:
    """Returns the encoded bytes of ``source`` and a short name for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the image"
    elif isinstance(source, (str, os.PathLike)):
        name = Path(source).name or str(source)
        try:
            data = safety.read_regular_file(source, MAX_BYTES)
        except safety.FileRefusedError as err:
            message = str(err).replace(str(source), name, 1)
            if "limit" in message:
                raise ImageTooLargeError(message) from None
            raise NotAFileError(message) from None
    elif hasattr(source, "read"):
        name = Path(getattr(source, "name", "") or "the upload").name
        if hasattr(source, "seek"):
            source.seek(0)
        data = source.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ImageTooLargeError(f"{name}: the file is over {MAX_BYTES // 2**20} MB")
    else:
        raise TypeError(
            f"`source` must be a path, bytes or a binary file object. Received: {type(source)!r}"
        )
    if len(data) > MAX_BYTES:
        raise ImageTooLargeError(f"{name}: the file is over {MAX_BYTES // 2**20} MB")
    return data, name


def _describe_non_image(data: bytes) -> str:
    """Guesses what a non-image body is, for the error message (never quoting it)."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "this is an HTML page, not an image (an error or login page instead of the photo?)"
    if head.startswith((b"%!ps", b"\xc5\xd0\xd3\xc6")):
        return "this is a PostScript/EPS document, not an image; it is not decoded"
    if head.startswith(b"%pdf"):
        return "this is a PDF document, not an image"
    if head.startswith((b"<?xml", b"<svg")) and b"<svg" in head:
        return "this is an SVG drawing; SVG is only read from folders of images, not here"
    if head.startswith((b"{", b"[")):
        return "this is JSON or text data, not an image"
    try:
        if b"\x00" in data[:512]:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "binary")
        data[:512].decode("utf-8")
        return "this is a text file, not an image"
    except UnicodeDecodeError:
        return ("the data is not in an image format we accept (JPEG, PNG, WebP, HEIC/HEIF, AVIF, "
                "GIF, BMP, TIFF)")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Converts any Pillow mode to RGB: alpha onto white, 16-bit scaled, CMYK and palettes mapped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def decode_image(source: ImageSource, *, max_side: int | None = None) -> np.ndarray:
    """Decodes an image from a path, bytes or a file object into RGB pixels.

    EXIF orientation is applied first, read by :mod:`imgsim.ingest.metadata`'s bounded reader
    (Pillow never parses an untrusted file's EXIF); transparency is composited onto white;
    greyscale, palette, CMYK and 16-bit images become 8-bit RGB; GIFs give their first frame.
    Large JPEGs are decoded at a reduced scale (draft mode) when ``max_side`` allows it. The
    work is bounded before decoding: :data:`MAX_PIXELS`, and for JPEGs the segment and scan
    caps of :mod:`imgsim.ingest.metadata`; images under :data:`MIN_SIDE` pixels or thinner
    than :data:`MAX_ASPECT` are refused, as nothing in them can be searched.

    Args:
        source: A file path, the encoded bytes, or a binary file object (an upload).
        max_side: If given, the result is shrunk (aspect kept) so neither side exceeds it; a
            side that would fall under ``min(MIN_SIDE, max_side)`` is padded with white to it.

    Returns:
        A ``uint8`` array of shape ``(height, width, 3)``.

    Raises:
        ImageDecodeError: With a plain-language message; one of the subclasses
            :class:`EmptyImageError`, :class:`NotAnImageError`, :class:`TruncatedImageError`,
            :class:`ImageTooLargeError` or :class:`NotAFileError` says which kind of problem it
            was. Only the formats of :data:`ALLOWED_FORMATS` are decoded, judged on the bytes
            before Pillow sees them; any exception a decoder raises becomes this error.
    """
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer))
                                 or max_side < 1):
        raise ValueError(f"`max_side` must be an integer >= 1. Received: max_side={max_side!r}")
    data, name = _read_bytes(source)
    if not data:
        raise EmptyImageError(f"{name}: the file is empty (0 bytes)")
    formats = tuple(f for f in sniff_format(data) if f in Image.OPEN)
    if not formats:  # checked on the bytes, before any decoder sees them
        raise NotAnImageError(f"{name}: {_describe_non_image(data)}")
    try:
        data, orientation, scans = metadata.read_structure(data, name, formats[0])
        im = _decode(data, name, formats, max_side, orientation, scans)
    except ImageDecodeError:
        raise
    except metadata.StructureRefusedError as err:
        raise ImageTooLargeError(str(err)) from None
    except UnidentifiedImageError as err:
        raise NotAnImageError(f"{name}: {_describe_non_image(data)}") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(
            f"{name}: the image declares a size too large to decode safely (a decompression bomb?)"
        ) from err
    except MemoryError as err:
        raise ImageTooLargeError(f"{name}: not enough memory to decode this image") from err
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise TruncatedImageError(
            f"{name}: the image data is damaged or cut short ({str(err)[:120]})"
        ) from err
    except Exception as err:  # noqa: BLE001 - a decoder's failure is this item's, whatever its type
        # Third-party decoders raise open-ended types (RecursionError, NotImplementedError,
        # IndexError, ...); each is one bad image, never a reason to stop a catalogue build.
        raise ImageDecodeError(
            f"{name}: the decoder failed on this image ({type(err).__name__})"
        ) from err
    return np.asarray(im, dtype=np.uint8)


def _peak_bytes(im: Image.Image) -> int:
    """Peak bytes per pixel of decoding ``im`` and making it RGB, measured on 12 MP pictures:
    about 5 for 8-bit colour or grey, 8 for CMYK, 16-20 with alpha or for WebP (decoded as
    RGBA, then composited), 25 for 16-bit (converted through float64); a JPEG, drafted or
    progressive, 0.6-3 (4 is stated, so one never meets MAX_DECODE_BYTES under MAX_PIXELS)."""
    if im.format == "JPEG":
        return 4
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return 25
    if im.format == "WEBP" or im.mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in im.info:
        return 20
    return 8 if im.mode == "CMYK" else 5


#: EXIF orientation -> the transposition that makes the picture upright.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _check_shape(width: int, height: int, name: str) -> None:
    """Refuses images too large to decode, or too small or thin to search, naming their size."""
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} pixels is too large to decode safely "
            f"(limit {MAX_PIXELS / 1e6:.0f} megapixels)"
        )
    short, long = sorted((width, height))
    if long > MAX_ASPECT * short:
        raise ImageTooSmallError(f"{name}: too thin to search: {width}x{height} pixels (the long "
                                 f"side may be at most {MAX_ASPECT} times the short one)")
    if long < MIN_SIDE:
        raise ImageTooSmallError(f"{name}: too small to search: {width}x{height} pixels (a side "
                                 f"needs at least {MIN_SIDE})")


def _decode(data: bytes, name: str, formats: tuple[str, ...], max_side: int | None,
            orientation: int = 1, scans: int = 0) -> Image.Image:
    """Opens ``data`` with only ``formats`` allowed, checks its size, and decodes it to RGB."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data), formats=list(formats))
        width, height = im.size
        _check_shape(width, height, name)
        if width * height * _peak_bytes(im) > MAX_DECODE_BYTES:
            raise ImageTooLargeError(
                f"{name}: {width}x{height} pixels ({im.mode}) is too large to decode safely: about "
                f"{width * height * _peak_bytes(im) / 2**20:.0f} MB of memory, over the "
                f"{MAX_DECODE_BYTES / 2**20:.0f} MB one image may use")
        metadata.check_scan_work(scans, width * height, name)
        if max_side is not None and im.format == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: far cheaper for photos.
            im.draft("RGB", (max_side, max_side))
        im.seek(0)
        im.load()
        im.info.pop("exif", None)  # nothing downstream may parse it (Image.getexif would)
        if orientation in _UPRIGHT:
            im = im.transpose(_UPRIGHT[orientation])
        im = _to_rgb(im)
    return _fit(im, max_side)


def _fit(im: Image.Image, max_side: int | None) -> Image.Image:
    """Shrinks a decoded RGB picture so no side exceeds ``max_side``; pads a thin one with white."""
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    floor = min(MIN_SIDE, max_side or MIN_SIDE)
    if min(im.size) < floor:  # a thin picture (or one shrunk to a small max_side): pad, centred
        canvas = Image.new("RGB", (max(im.width, floor), max(im.height, floor)), (255, 255, 255))
        canvas.paste(im, ((canvas.width - im.width) // 2, (canvas.height - im.height) // 2))
        im = canvas
    return im


def _check_rgb(rgb: np.ndarray, name: str) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"`{name}` must be a uint8 array of shape (H, W, 3). Received: {rgb.dtype} {rgb.shape}")


def to_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Pads an RGB image to a square with white, centred, and resizes it to ``size``.

    Padding rather than cropping keeps the whole product in view; white matches the backgrounds
    of catalogue photos.

    Args:
        rgb: ``uint8`` array of shape ``(H, W, 3)``.
        size: Side of the output square in pixels.

    Returns:
        ``uint8`` array of shape ``(size, size, 3)``.
    """
    if size < 1:
        raise ValueError(f"`size` must be >= 1. Received: size={size}")
    _check_rgb(rgb, "rgb")
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    side = max(h, w)
    if h != w:
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(im, ((side - w) // 2, (side - h) // 2))
        im = canvas
    if side != size:
        im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(im, dtype=np.uint8)


def load_square(source: ImageSource, size: int) -> np.ndarray:
    """Decodes ``source`` and returns it as the ``(size, size, 3)`` square a model sees."""
    return to_square(decode_image(source, max_side=2 * size), size)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """Encodes an RGB ``uint8`` array as JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


#: Longest side of the thumbnail a catalogue keeps of each item; every store is embedded from it.
THUMB_SIDE = 256


def thumbnail(source: ImageSource | np.ndarray) -> tuple[np.ndarray, bytes]:
    """A picture as a catalogue keeps it: longest side at most :data:`THUMB_SIDE`, as JPEG.

    Stores embed ``load_square(jpeg, size)``; a query made the same way sees the very pixels of
    its own item (self-score 1). ``source`` is anything :func:`decode_image` takes, or a decoded
    ``(H, W, 3)`` uint8 array (shrunk alike: the same as its file when that is <= 448 px).

    Returns:
        ``(rgb, jpeg)``: the thumbnail's ``(h, w, 3)`` uint8 pixels and its JPEG bytes.
    """
    if isinstance(source, np.ndarray):
        _check_rgb(source, "source")
        rgb = np.asarray(_fit(Image.fromarray(np.ascontiguousarray(source)), THUMB_SIDE), np.uint8)
    else:
        rgb = decode_image(source, max_side=THUMB_SIDE)
    return rgb, encode_jpeg(rgb)


#: Largest SVG source accepted, in bytes.
MAX_SVG_BYTES = 8 * 1024 * 1024
#: Most elements an SVG may draw once every ``<use>`` and ``url(#...)`` reference is expanded.
MAX_SVG_ELEMENTS = 200_000
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def _svg_references(element: Any) -> list[str]:
    """The ids an element refers to (``href="#id"``, ``url(#id)``)."""
    refs = []
    for key, value in element.attrib.items():
        if key in ("href", _XLINK_HREF) and value.startswith("#"):
            refs.append(value[1:])
        elif "url(#" in value:
            refs.extend(part.split(")", 1)[0].strip("'\" ") for part in value.split("url(#")[1:])
    return refs


def check_svg(data: bytes, name: str = "the drawing") -> None:
    """Refuses SVGs that are too big, refer to themselves, or expand into too many elements.

    cairosvg follows ``<use>`` and ``url(#...)`` references recursively: a self-reference
    raises RecursionError deep in the renderer, and a few nested references can multiply into
    billions of drawn elements. This walks the document once and counts the expansion.

    Raises:
        ImageDecodeError: The SVG is unparsable, too large, self-referencing or explosive.
    """
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    if len(data) > MAX_SVG_BYTES:
        raise ImageTooLargeError(f"{name}: the SVG is over {MAX_SVG_BYTES // 2**20} MB")
    try:
        root = ElementTree.fromstring(data)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as err:
        raise NotAnImageError(
            f"{name}: the SVG cannot be read safely ({type(err).__name__})"
        ) from err
    by_id = {el.attrib["id"]: el for el in root.iter() if "id" in el.attrib}
    cost: dict[int, int] = {}
    active: set[int] = set()

    def expanded(el: Any) -> int:
        key = id(el)
        if key in cost:
            return cost[key]
        if key in active:
            raise ImageDecodeError(f"{name}: the SVG refers to itself (a reference loop)")
        active.add(key)
        total = 1
        for child in el:
            total += expanded(child)
        for ref in _svg_references(el):
            if ref in by_id:
                total += expanded(by_id[ref])
        if total > MAX_SVG_ELEMENTS:
            raise ImageTooLargeError(
                f"{name}: the SVG expands to more than {MAX_SVG_ELEMENTS} elements"
            )
        active.discard(key)
        cost[key] = total
        return total

    try:
        expanded(root)
    except RecursionError as err:
        raise ImageDecodeError(f"{name}: the SVG is nested too deeply") from err


def rasterize_svg(data: bytes, width: int, name: str = "the drawing") -> bytes:
    """Draws an SVG as PNG bytes ``width`` pixels wide (for catalogue folders and the demo).

    External resources (files, URLs) are never fetched (cairosvg's ``unsafe=False``); :func:`check_svg` runs first.

    Args:
        data: The SVG source.
        width: Output width in pixels.
        name: For messages.

    Returns:
        PNG bytes, to be passed to :func:`decode_image`.

    Raises:
        ImageDecodeError: The SVG is refused or cairosvg fails on it, whatever the exception.
    """
    check_svg(data, name)
    import cairosvg

    try:
        # unsafe=False: cairosvg loads only data: URLs, never files or the network.
        return cairosvg.svg2png(bytestring=data, output_width=width, unsafe=False)
    except MemoryError as err:
        raise ImageTooLargeError(f"{name}: not enough memory to draw this SVG") from err
    except Exception as err:  # noqa: BLE001 - any renderer failure is this item's alone
        raise ImageDecodeError(
            f"{name}: the SVG could not be drawn ({type(err).__name__})"
        ) from err
