"""The one place where input becomes pixels.

Every image that enters imgsim (a catalogue file, a downloaded body, an upload, a camera shot)
goes through :func:`decode_image`, which returns an RGB ``uint8`` array or raises an
:class:`ImageDecodeError` whose message says, in plain words, what was wrong. Model inputs are
made from those arrays by :func:`to_square`, so indexing and querying see the same pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF (iPhone photos); optional so that a missing wheel only disables that format.
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is in requirements.txt
    HEIF_SUPPORTED = False

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

#: Largest image accepted, in pixels (a 12 MP phone photo is ~12e6; 100 MP covers medium format).
MAX_PIXELS = 100_000_000
#: Largest encoded file accepted, in bytes.
MAX_BYTES = 64 * 1024 * 1024

# Our own pixel limit is checked before decoding; Pillow's bomb guard stays on as a second net.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageDecodeError(ValueError):
    """The input could not be turned into an RGB image; the message says why."""


class EmptyImageError(ImageDecodeError):
    """The input has no bytes at all."""


class NotAnImageError(ImageDecodeError):
    """The input is some other kind of data (HTML, text, an unknown format)."""


class TruncatedImageError(ImageDecodeError):
    """The input starts like an image but its data ends early or is damaged."""


class ImageTooLargeError(ImageDecodeError):
    """The input is too large to decode safely (file size or a decompression bomb)."""


def _read_bytes(source: ImageSource) -> tuple[bytes, str]:
    """Returns the encoded bytes of ``source`` and a short name for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "the image"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        try:
            size = path.stat().st_size
        except FileNotFoundError as err:
            raise ImageDecodeError(f"{name}: file not found ({path})") from err
        if size > MAX_BYTES:
            raise ImageTooLargeError(
                f"{name}: the file is {size / 2**20:.0f} MB; the limit is {MAX_BYTES // 2**20} MB"
            )
        data = path.read_bytes()
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
    """Guesses what a non-image body is, for the error message."""
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "this is an HTML page, not an image (an error or login page instead of the photo?)"
    if head.startswith((b"{", b"[")):
        return "this is JSON or text data, not an image"
    if head.startswith(b"%pdf"):
        return "this is a PDF document, not an image"
    try:
        data[:512].decode("utf-8")
        return "this is a text file, not an image"
    except UnicodeDecodeError:
        return "the data is not in any image format we can read (JPEG, PNG, WebP, HEIC, GIF, ...)"


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

    EXIF orientation is applied first; transparency is composited onto white; greyscale,
    palette, CMYK and 16-bit images become 8-bit RGB; GIFs give their first frame. Large JPEGs
    are decoded at a reduced scale (draft mode) when ``max_side`` allows it.

    Args:
        source: A file path, the encoded bytes, or a binary file object (an upload).
        max_side: If given, the result is shrunk (aspect kept) so neither side exceeds it.

    Returns:
        A ``uint8`` array of shape ``(height, width, 3)``.

    Raises:
        ImageDecodeError: With a plain-language message; one of the subclasses
            :class:`EmptyImageError`, :class:`NotAnImageError`, :class:`TruncatedImageError`
            or :class:`ImageTooLargeError` says which kind of problem it was.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"`max_side` must be >= 1. Received: max_side={max_side}")
    data, name = _read_bytes(source)
    if not data:
        raise EmptyImageError(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise ImageTooLargeError(
                    f"{name}: {width}x{height} pixels is too large to decode safely "
                    f"(limit {MAX_PIXELS / 1e6:.0f} megapixels)"
                )
            if max_side is not None and im.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale straight from the DCT: far cheaper for photos.
                im.draft("RGB", (max_side, max_side))
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
    except UnidentifiedImageError as err:
        raise NotAnImageError(f"{name}: {_describe_non_image(data)}") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(
            f"{name}: the image declares a size too large to decode safely (a decompression bomb?)"
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        if isinstance(err, ImageDecodeError):
            raise
        raise TruncatedImageError(
            f"{name}: the image data is damaged or cut short ({err})"
        ) from err
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(im, dtype=np.uint8)


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
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(
            f"`rgb` must be a uint8 array of shape (H, W, 3). Received: {rgb.dtype} {rgb.shape}"
        )
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
