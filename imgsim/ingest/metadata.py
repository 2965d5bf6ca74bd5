"""Bounded readers of an image file's structure, run on the raw bytes before any decoder sees them.

Pillow reads metadata without a budget: it copies a tag's value once for every tag that points
at it (3,000 EXIF tags sharing one 700 KB blob cost 2 GB), keeps every JPEG segment in a Python
list (millions of 4-byte comments cost 2 GB), and decodes every progressive scan (thousands of
them cost minutes). So :mod:`imgsim.ingest.images` asks this module first:

- :func:`prepare_jpeg` walks the marker segments (capped in number), counts the scans, reads
  the EXIF orientation, and returns the file without the segments the pixels do not need
  (EXIF, XMP, MPF, ICC, comments), so Pillow never parses that EXIF (it would, for the DPI).
- :func:`exif_orientation` reads tag 0x0112 from IFD0 and nothing else: a fixed number of
  12-byte entries, no pointer followed, so tag bombs and IFD loops cost nothing.
- :func:`chunk_orientation` finds a PNG's or WebP's EXIF chunk with a capped walk.
- :func:`read_structure` picks the reader for a format; :func:`check_heif_exif` finds a
  HEIF/AVIF file's EXIF item (Pillow's AVIF plugin parses it on open) and checks it as a TIFF.
- :func:`check_tiff` walks a TIFF's first IFD and its EXIF/GPS sub-IFDs (loops detected) and
  refuses tags that declare more data than the file holds, before Pillow reads them all.

Every bound is a named constant whose comment says why that number.
"""

from __future__ import annotations

import re
import struct

from imgsim.errors import ImgsimError

#: Most marker segments walked in a JPEG. A camera JPEG has 10-30 (an EXIF, an XMP, quantisation
#: and Huffman tables, one per progressive scan); 39 MB of EXIF in 64 KB segments is about 620.
#: Pillow keeps each in a Python list, so millions of 4-byte comments cost gigabytes.
MAX_JPEG_SEGMENTS = 4096
#: Most scans in a progressive JPEG. libjpeg's and mozjpeg's progressions have 10-12; each scan is
#: one more pass over every block, so thousands of them kept a decoder busy for 100 s.
MAX_JPEG_SCANS = 100
#: Most scans x pixels decoded (one pass over every pixel per scan): 30 scans of a 50 MP photo.
#: A noisy 12 MP photo with 10 scans (1.2e8) decodes in 0.15 s on the development machine, so
#: this bounds one decode to about 2 s of CPU.
MAX_JPEG_SCAN_WORK = 1_500_000_000
#: Most EXIF bytes read for the orientation. The standard puts EXIF in one 64 KB segment; a file
#: spreading it over more is read no further than this.
MAX_EXIF_BYTES = 1024 * 1024
#: Most IFD entries looked at for the orientation, and per IFD of a TIFF. Real IFDs hold 10-60
#: entries; 12 bytes each, this caps the reading at 12 KB.
MAX_IFD_ENTRIES = 1000
#: Most PNG chunks or WebP chunks walked looking for EXIF before the pixels. Real files have a
#: handful; a text-chunk flood stops the search here (the picture is then shown as stored).
MAX_CHUNKS = 1000
#: Most IFDs of a TIFF walked: IFD0 and its EXIF, GPS and interoperability sub-IFDs.
MAX_TIFF_IFDS = 8
#: Most numbers the tags of a TIFF may declare. Pillow makes each a Python int (about 36 bytes),
#: so this caps that at about 40 MB; a 50 MP TIFF in one-row strips declares about 16,000.
MAX_TIFF_NUMBERS = 1_000_000

_ORIENTATION_TAG = 0x0112
#: TIFF sub-IFD pointers Pillow follows when it reads a TIFF's EXIF: Exif, GPS, Interop.
_SUB_IFD_TAGS = (0x8769, 0x8825, 0xA005)
#: Bytes per value of each TIFF field type (1 BYTE ... 18 IFD8); numeric ones become Python ints.
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}
_BYTE_TYPES = (1, 2, 6, 7)  # kept as one bytes object, not one number per value
#: The next marker after a scan's entropy-coded data: 0xFF then anything but a stuffed zero or a
#: restart marker (fill bytes 0xFF 0xFF match and are skipped by the walk).
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([1-8])')
_XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
#: Segments Pillow needs for the pixels: JFIF (APP0) and Adobe (APP14: CMYK/YCCK inversion).
_KEPT_SEGMENTS = ((0xE0, b"JFIF\x00"), (0xE0, b"JFXX\x00"), (0xEE, b"Adobe"))


class StructureRefusedError(ImgsimError, ValueError):
    """A file's structure would cost a decoder more than a stated budget; the message says which."""


def exif_orientation(payload: bytes, xmp: bytes = b"") -> int:
    """The EXIF orientation (1-8) in IFD0 of ``payload``, else the XMP one, else 1.

    Args:
        payload: TIFF-structured EXIF, with or without the leading ``b"Exif\\0\\0"``.
        xmp: The file's XMP packet, read (as Pillow does) when the EXIF has no orientation.

    Returns:
        The orientation; only tag 0x0112 of IFD0 is read (at most :data:`MAX_IFD_ENTRIES`
        entries), no pointer is followed and no value is copied; the XMP is searched for
        ``tiff:Orientation`` in its first :data:`MAX_EXIF_BYTES`.
    """
    base = 6 if payload.startswith(b"Exif\x00\x00") else 0
    head = payload[base:base + 8]
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is not None and len(head) == 8 and struct.unpack(order + "H", head[2:4])[0] == 42:
        ifd = base + struct.unpack(order + "I", head[4:8])[0]
        count = struct.unpack_from(order + "H", payload, ifd)[0] if ifd + 2 <= len(payload) else 0
        for i in range(min(count, MAX_IFD_ENTRIES)):
            at = ifd + 2 + 12 * i
            if at + 12 > len(payload):
                break
            tag, kind, number = struct.unpack_from(order + "HHI", payload, at)
            if tag == _ORIENTATION_TAG:
                value = struct.unpack_from(order + "H", payload, at + 8)[0] if kind == 3 and number else 1
                return value if 1 <= value <= 8 else 1
    found = _XMP_ORIENTATION.search(xmp, 0, MAX_EXIF_BYTES)
    return int(found[1]) if found else 1


def prepare_jpeg(data: bytes, name: str) -> tuple[bytes, int, int]:
    """Walks a JPEG's marker segments; returns what Pillow needs, the orientation and the scans.

    Args:
        data: The JPEG file.
        name: For messages.

    Returns:
        ``(jpeg, orientation, scans)``: the file without its EXIF, XMP, MPF, ICC, other
        application and comment segments (only JFIF and Adobe are kept), the EXIF orientation
        (1-8), and the number of scans (start-of-scan markers).

    Raises:
        StructureRefusedError: More than :data:`MAX_JPEG_SEGMENTS` segments or
            :data:`MAX_JPEG_SCANS` scans.
    """
    parts, copy_from, pos, size = [], 0, 2, len(data)
    segments = scans = exif_bytes = 0
    exif: list[bytes] = []
    xmp = b""
    while pos + 1 < size:
        if data[pos] != 0xFF:  # junk between segments: libjpeg skips to the next marker, so do we
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise StructureRefusedError(
                f"{name}: the JPEG has more than {MAX_JPEG_SEGMENTS} marker segments (a real photo "
                "has a few dozen); it is not decoded")
        if marker == 0xD9:  # end of image: what follows (an MPO's other pictures) is not decoded
            break
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7 or pos + 4 > size:
            pos += 2
            continue
        end = pos + 2 + ((data[pos + 2] << 8) | data[pos + 3])
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise StructureRefusedError(
                    f"{name}: the JPEG has more than {MAX_JPEG_SCANS} progressive scans (a real "
                    "photo has about 10); decoding it would take minutes, so it is not decoded")
            found = _NEXT_MARKER.search(data, end)
            pos = found.start() if found else size
            continue
        if marker == 0xFE or (0xE0 <= marker <= 0xEF and not any(
                marker == kept and data.startswith(prefix, pos + 4) for kept, prefix in _KEPT_SEGMENTS)):
            if marker == 0xE1 and data.startswith(b"Exif\x00\x00", pos + 4) and exif_bytes < MAX_EXIF_BYTES:
                exif.append(data[pos + 10:min(end, pos + 10 + MAX_EXIF_BYTES - exif_bytes)])
                exif_bytes += len(exif[-1])
            elif marker == 0xE1 and not xmp and data.startswith(_XMP_JPEG, pos + 4):
                xmp = data[pos + 4 + len(_XMP_JPEG):end]
            parts.append(data[copy_from:pos])
            copy_from = end
        pos = max(end, pos + 4)
    parts.append(data[copy_from:])
    return b"".join(parts), exif_orientation(b"".join(exif), xmp), scans


def read_structure(data: bytes, name: str, kind: str) -> tuple[bytes, int, int]:
    """Reads a file's structure with bounds before it is decoded.

    Args:
        data: The file.
        name: For messages.
        kind: Its format, as :func:`imgsim.ingest.images.sniff_format` judged it.

    Returns:
        ``(data, orientation, scans)``: the bytes the decoder may see (a JPEG loses the
        segments its pixels do not need), the EXIF orientation to apply (1 where the decoder
        applies it itself: TIFF, HEIF, AVIF) and the number of JPEG scans (0 otherwise).

    Raises:
        StructureRefusedError: The structure is over one of this module's budgets.
    """
    if kind == "JPEG":
        return prepare_jpeg(data, name)
    if kind in ("PNG", "WEBP"):
        return data, chunk_orientation(data, kind), 0
    if kind == "TIFF":
        check_tiff(data, name)  # Pillow applies a TIFF's orientation itself on load
    if kind in ("HEIF", "AVIF"):
        check_heif_exif(data, name)
    return data, 1, 0  # HEIF/AVIF: the decoder applies the container's rotation itself


def check_scan_work(scans: int, pixels: int, name: str) -> None:
    """Refuses a progressive JPEG whose scans x pixels exceed :data:`MAX_JPEG_SCAN_WORK`."""
    if scans > 1 and scans * pixels > MAX_JPEG_SCAN_WORK:
        raise StructureRefusedError(
            f"{name}: {scans} progressive scans of {pixels / 1e6:.0f} megapixels is too much work "
            f"to decode (at most {MAX_JPEG_SCAN_WORK / 1e9:.1f} billion pixels over all scans)")


def chunk_orientation(data: bytes, kind: str) -> int:
    """The orientation in the EXIF chunk of a PNG (``eXIf``, before the pixels, where the PNG
    spec puts it) or a WebP (``EXIF``; only extended WebP files carry one), else in a WebP's
    ``XMP`` chunk; 1 if none.

    At most :data:`MAX_CHUNKS` chunks are walked, and only the EXIF chunk's IFD0 is read.
    """
    png = kind == "PNG"
    pos, exif, xmp = (8 if png else 12), b"", b""
    for _ in range(MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        if png:
            length, name = struct.unpack_from(">I4s", data, pos)
        else:
            name, length = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if name in (b"eXIf", b"EXIF") and not exif:
            exif = data[body:body + min(length, MAX_EXIF_BYTES)]
        elif name == b"XMP ":  # WebP's; a PNG's XMP orientation is not honoured (nor by Pillow)
            xmp = xmp or data[body:body + min(length, MAX_EXIF_BYTES)]
        elif name in (b"IDAT", b"IEND"):
            break
        pos = body + length + (4 if png else length & 1)  # a PNG chunk's CRC; a RIFF chunk's pad
    return exif_orientation(exif, xmp)


def check_tiff(data: bytes, name: str) -> None:
    """Refuses a TIFF whose tags would cost Pillow more memory than the file is large.

    Walks IFD0 and the EXIF, GPS and interoperability sub-IFDs that Pillow reads when it opens
    the first page (an IFD reached twice, a loop, is read once). The tags of a well-formed file
    never share their data, so together they declare at most the file's size; a tag bomb (many
    tags pointing at one blob) declares far more, and each tag would be a copy.

    Raises:
        StructureRefusedError: Tags declaring more bytes than the file holds, more than
            :data:`MAX_TIFF_NUMBERS` numbers, or an IFD of over :data:`MAX_IFD_ENTRIES` entries.
    """
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    count_f, entry_f, entry_size, inline = ("Q", "HHQ", 20, 8) if big else ("H", "HHI", 12, 4)
    offset_f = "Q" if big else "I"
    try:
        first = struct.unpack_from(order + offset_f, data, 8 if big else 4)[0]
    except struct.error:
        return  # too short to hold an IFD: the decoder reports it as damaged
    todo, seen, declared, numbers = [first], set(), 0, 0
    while todo and len(seen) < MAX_TIFF_IFDS:
        ifd = todo.pop()
        if ifd in seen or ifd + 8 > len(data):
            continue  # a loop back to an IFD already read, or a pointer off the end
        seen.add(ifd)
        (count,) = struct.unpack_from(order + count_f, data, ifd)
        if count > MAX_IFD_ENTRIES:
            raise StructureRefusedError(
                f"{name}: its metadata is too large to read safely (an IFD of {count} tags; "
                f"at most {MAX_IFD_ENTRIES})")
        start = ifd + (8 if big else 2)
        for i in range(count):
            at = start + entry_size * i
            if at + entry_size > len(data):
                break
            tag, kind, number = struct.unpack_from(order + entry_f, data, at)
            value_bytes = number * _TYPE_SIZES.get(kind, 0)
            if value_bytes > inline:
                declared += value_bytes
            if kind not in _BYTE_TYPES:
                numbers += number
            if tag in _SUB_IFD_TAGS and kind in (4, 13, 16, 18):
                todo.append(struct.unpack_from(order + offset_f, data, at + entry_size - inline)[0])
    if declared > len(data) or numbers > MAX_TIFF_NUMBERS:
        raise StructureRefusedError(
            f"{name}: its metadata is too large to read safely: the TIFF's tags declare "
            f"{declared / 2**20:.1f} MB and {numbers} numbers in a {len(data) / 2**20:.1f} MB file "
            "(tags sharing their data, a tag bomb)")


def _boxes(data: bytes, start: int, end: int):
    """The ISOBMFF boxes between ``start`` and ``end``: ``(type, body start, box end)``, capped."""
    pos = start
    for _ in range(MAX_CHUNKS):
        if pos + 8 > end:
            return
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,), header = struct.unpack_from(">Q", data, pos + 8), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _number(data: bytes, pos: int, size: int) -> tuple[int, int]:
    return int.from_bytes(data[pos:pos + size], "big"), pos + size


def _heif_exif(data: bytes) -> bytes:
    """The payload of a HEIF/AVIF file's ``Exif`` item (its extents joined), or ``b""``."""
    meta = next(((s, e) for kind, s, e in _boxes(data, 0, len(data)) if kind == b"meta"), None)
    if meta is None:
        return b""
    exif_items, extents = set(), {}
    for kind, start, end in _boxes(data, meta[0] + 4, meta[1]):  # meta is a FullBox
        version = data[start]
        if kind == b"iinf":
            for entry, s, _e in _boxes(data, start + (6 if version == 0 else 8), end):
                if entry == b"infe" and data[s] >= 2:
                    item, pos = _number(data, s + 4, 2 if data[s] == 2 else 4)
                    if data[pos + 2:pos + 6] == b"Exif":
                        exif_items.add(item)
        elif kind == b"iloc":
            offset_size, length_size = data[start + 4] >> 4, data[start + 4] & 15
            base_size, index_size = data[start + 5] >> 4, (data[start + 5] & 15) if version else 0
            count, pos = _number(data, start + 6, 2 if version < 2 else 4)
            for _ in range(min(count, MAX_CHUNKS)):
                item, pos = _number(data, pos, 2 if version < 2 else 4)
                method, pos = _number(data, pos, 2) if version else (0, pos)
                base, pos = _number(data, pos + 2, base_size)
                parts, pos = _number(data, pos, 2)
                spans = []
                for _ in range(min(parts, MAX_CHUNKS)):
                    offset, pos = _number(data, pos + index_size, offset_size)
                    length, pos = _number(data, pos, length_size)
                    spans.append((base + offset, length))
                if method & 15 == 0:  # 0: in the file; 1 and 2 (idat, other items) hold no EXIF here
                    extents[item] = spans
    for item in sorted(exif_items & set(extents)):
        return b"".join(data[at:at + min(length, MAX_EXIF_BYTES)] for at, length in extents[item])
    return b""


def check_heif_exif(data: bytes, name: str) -> None:
    """Refuses a HEIF/AVIF file whose EXIF is a tag bomb, before the decoder parses it.

    Pillow's AVIF plugin parses the EXIF when it opens the file (for the orientation), with no
    budget; this finds the ``Exif`` item through the ``meta`` box's item info and locations and
    applies :func:`check_tiff` to it.

    Raises:
        StructureRefusedError: The EXIF's tags declare more data than the EXIF holds.
    """
    try:
        payload = _heif_exif(data)
    except (struct.error, IndexError):
        return  # a damaged container: the decoder reports it
    if len(payload) < 4:
        return
    tiff = payload[4 + int.from_bytes(payload[:4], "big"):]
    tiff = tiff[6:] if tiff.startswith(b"Exif\x00\x00") else tiff
    if tiff[:4] in (b"II*\x00", b"MM\x00*"):
        check_tiff(tiff, name)
