"""Where catalogue items come from: a folder of images, a Flipkart-style CSV, or the demo.

Each source is turned into a list of :class:`ItemSpec` (a stable id, where to read the image,
and its metadata) without touching any pixels; :mod:`imgsim.ingest.catalog` does the reading.

What a source may point at (issue 14): a CSV's image column takes ``http(s)`` URLs, or paths
relative to the CSV's own folder that stay inside it; absolute paths and ``file://`` URLs only
under the roots listed in ``IMGSIM_LOCAL_ROOTS``. A labels CSV's ``path`` stays inside its
folder. An item that breaks these rules is kept with a ``problem`` and recorded as refused;
a CSV whose rows have the wrong number of fields, or that lists a path twice, is an error
naming the line. Messages never quote a file's contents.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from imgsim.errors import ImgsimError
from imgsim.ingest import safety

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".svg"}
)
DEMO_ROOT = Path("/usr/share/tuxpaint/stamps")
DEMO_PACKAGE = "tuxpaint-stamps-default"
NAME_COLUMNS = ("name", "product_name", "productDisplayName", "title")
CATEGORY_COLUMNS = ("category", "subCategory", "masterCategory")
FLIPKART_REQUIRED = ("uniq_id", "product_name", "image")
#: Largest CSV read (labels or product list), in bytes.
MAX_CSV_BYTES = 512 * 2**20


class SourceError(ImgsimError, ValueError):
    """A source cannot be read at all (missing folder, wrong CSV columns, no demo package)."""


class DemoUnavailableError(SourceError):
    """The demo catalogue's Debian package is not installed."""


@dataclasses.dataclass(frozen=True)
class ItemSpec:
    """One item to ingest.

    Attributes:
        id: Stable identifier (a product id, or a hash of the source path).
        source: A file path or an http(s) URL.
        fields: Metadata: ``name``, ``category``, ``label`` and any extra columns.
        problem: Why the item must not be read (an unsafe path or URL); empty when it may.
    """

    id: str
    source: str
    fields: dict[str, Any]
    problem: str = ""

    @property
    def is_url(self) -> bool:
        """Whether ``source`` must be downloaded."""
        return self.source.startswith(("http://", "https://"))


def path_id(relative: str) -> str:
    """A stable id for a file from its path relative to the source root."""
    return hashlib.sha1(relative.encode("utf-8")).hexdigest()[:16]


def _clean(value: Any) -> Any:
    """NaN and None become empty strings; numpy scalars become Python values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value.item() if hasattr(value, "item") else value


def read_csv_records(path: str | os.PathLike, what: str = "CSV") -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Reads a CSV strictly: a regular file under :data:`MAX_CSV_BYTES`, UTF-8, every row as
    wide as the header.

    Args:
        path: The CSV.
        what: What it is, for messages (``"labels CSV"``).

    Returns:
        The header, and ``(line number, row)`` pairs (the line where each row starts).

    Raises:
        SourceError: Unreadable, not UTF-8, empty, a header naming a column twice, or a row
            with extra or missing fields; the message names the line, never its contents.
    """
    try:
        data = safety.read_regular_file(path, MAX_CSV_BYTES)
    except safety.FileRefusedError as err:
        raise SourceError(f"the {what} {err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SourceError(f"the {what} {path} is not UTF-8 text (bad byte at offset {err.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise SourceError(f"the {what} {path} is empty")
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            first = next(i for i, h in enumerate(header) if header.index(h) != i)
            raise SourceError(
                f"the {what} {path}: its header names the same column twice "
                f"(columns {header.index(header[first]) + 1} and {first + 1})"
            )
        records: list[tuple[int, dict[str, str]]] = []
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != len(header):
                raise SourceError(
                    f"the {what} {path}: line {start} has {len(row)} fields but the header has "
                    f"{len(header)} (an unquoted comma, or a missing field?)"
                )
            records.append((start, dict(zip(header, row))))
    except csv.Error as err:
        raise SourceError(f"the {what} {path}: line {reader.line_num} cannot be parsed ({err})") from None
    return header, records


def _walk_images(root: Path) -> list[Path]:
    """Image-named entries under ``root``, sorted; symlinked folders are not followed.

    Entries that are not regular files (a FIFO, a symlink loop, a link to a device) are listed
    too, so that the catalogue records why each was refused instead of skipping it silently.
    """
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                found.append(Path(folder) / name)
    return sorted(found)


def _path_key(relative: str) -> str:
    """The join key of a ``path`` cell: ``/``-separated and normalised (``./a`` is ``a``)."""
    return posixpath.normpath(relative.strip().replace("\\", "/"))


def from_folder(
    root: str | Path, labels_csv: str | Path | None = None, label_column: str | None = None
) -> list[ItemSpec]:
    """Lists the images under ``root`` (recursively) with their metadata.

    Without a labels CSV the first sub-folder is the category and the second the sub-category.
    With one, rows are joined on its ``path`` column (relative to ``root``); its other columns
    become metadata, and ``name``/``category``/``label`` are taken from the usual column names.

    A file that is a symlink leading outside ``root`` (and outside ``IMGSIM_LOCAL_ROOTS``) is
    kept with a ``problem``, so the catalogue records it as refused.

    Args:
        root: The folder.
        labels_csv: Optional CSV with a ``path`` column.
        label_column: The column that becomes ``label`` (default: ``label``, else the category).

    Raises:
        SourceError: The folder does not exist or holds no images; the CSV lacks ``path``,
            lists a path twice, has a ``path`` that leaves ``root``, or a malformed row.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder")
    files = _walk_images(root)
    rows: dict[str, dict[str, Any]] = {}
    if labels_csv is not None:
        header, records = read_csv_records(labels_csv, "labels CSV")
        if "path" not in header:
            raise SourceError(
                f"the labels CSV {labels_csv} needs a `path` column (relative to {root}); its "
                f"header has {len(header)} column(s), none named `path`"
            )
        lines: dict[str, int] = {}
        for line, record in records:
            key = _path_key(record["path"])
            try:
                safety.inside(root, key)
            except safety.PathOutsideError as err:
                raise SourceError(
                    f"the labels CSV {labels_csv}: line {line}: `path` must stay inside {root} ({err})"
                ) from None
            if key in lines:
                raise SourceError(
                    f"the labels CSV {labels_csv} lists the same path on lines {lines[key]} and {line}"
                )
            lines[key] = line
            rows[key] = record
    if not files and not rows:
        raise SourceError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    specs = []
    seen: set[str] = set()
    for path in files:
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        fields: dict[str, Any] = {
            "name": path.stem.replace("_", " ").replace("-", " "),
            "category": parts[0] if len(parts) > 1 else "",
            "subcategory": parts[1] if len(parts) > 2 else "",
            "path": rel,
        }
        row = rows.get(rel)
        if row is not None:
            fields.update({k: _clean(v) for k, v in row.items()})
            for column in NAME_COLUMNS:
                if row.get(column):
                    fields["name"] = row[column]
                    break
            for column in CATEGORY_COLUMNS:
                if row.get(column):
                    fields["category"] = row[column]
                    break
        item_id = str(row["id"]) if row is not None and row.get("id") else path_id(rel)
        fields["label"] = _pick_label(fields, label_column)
        seen.add(rel)
        specs.append(ItemSpec(item_id, str(path), fields, _folder_problem(root, rel)))
    for rel, row in rows.items():
        if rel not in seen:  # listed in the CSV but not on disk: kept, and reported as missing
            fields = {k: _clean(v) for k, v in row.items()}
            fields["label"] = _pick_label(fields, label_column)
            specs.append(ItemSpec(str(row.get("id") or path_id(rel)), str(root / rel), fields))
    return specs


def _folder_problem(root: Path, rel: str) -> str:
    """Why a listed file must not be read (a symlink out of the folder), or ``""``."""
    try:
        safety.inside(root, rel)
    except safety.PathOutsideError as err:
        if "symlink loop" in str(err):
            return ""  # reading it reports the loop itself
        if safety.under_local_roots(root / rel):
            return ""
        return f"{rel}: refused, {err}; list its folder in {safety.LOCAL_ROOTS_ENV} to allow it"
    return ""


def _pick_label(fields: dict[str, Any], label_column: str | None) -> str:
    if label_column:
        return str(fields.get(label_column, ""))
    return str(fields.get("label") or fields.get("category") or "")


def parse_list_field(text: str) -> list[str]:
    """Parses Flipkart's JSON-like list cells (``["a", "b"]``) into strings, tolerating junk."""
    text = (text or "").strip()
    if not text:
        return []
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
        if isinstance(value, str):
            return [value.strip()]
    return re.findall(r"https?://[^\s\"',\]]+", text) or [text.strip("[]\" ")]


def parse_category_tree(text: str) -> list[str]:
    """``'["Clothing >> Women's Clothing >> Shorts"]'`` -> ``["Clothing", "Women's Clothing", "Shorts"]``."""
    items = parse_list_field(text)
    if not items:
        return []
    return [level.strip() for level in items[0].split(">>") if level.strip()]


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def image_source(cell: str, base: Path) -> tuple[str, str]:
    """Where a CSV's image cell may be read from: ``(source, problem)``.

    ``http(s)`` URLs pass as they are; a relative path must stay inside ``base`` (the CSV's
    folder); an absolute path or ``file://`` URL must be under ``IMGSIM_LOCAL_ROOTS``; other
    schemes are refused. ``problem`` is empty when the source may be read.
    """
    cell = cell.strip()
    if not cell:
        return "", ""
    if cell.startswith(("http://", "https://")):
        return cell, ""
    scheme = _SCHEME.match(cell)
    if cell.lower().startswith("file:"):
        path = unquote(urlsplit(cell).path)
    elif scheme and len(scheme.group(1)) > 1:
        return cell, f"refused: only http(s) URLs or paths are read, not {scheme.group(1)}: URLs"
    else:
        path = cell
    if os.path.isabs(path) or cell.lower().startswith("file:"):
        try:
            return str(safety.check_local_path(path)), ""
        except safety.PathOutsideError as err:
            return path, f"refused: {err}"
    try:
        return str(safety.inside(base, path)), ""
    except safety.PathOutsideError as err:
        return str(base / path), f"refused: a relative path must stay inside the CSV's folder ({err})"


def from_flipkart_csv(
    csv_path: str | Path, label_column: str | None = None, image_index: int = 0
) -> list[ItemSpec]:
    """Reads a CSV shaped like Kaggle's ``flipkart_com-ecommerce_sample.csv``.

    ``image`` holds a list of URLs (the ``image_index``-th is used), or paths relative to the
    CSV's folder (see :func:`image_source`); ``product_category_tree`` becomes ``category``
    (level 1), ``subcategory`` (level 2), ``category_path`` and ``category_N`` columns.

    Raises:
        SourceError: The file is unreadable, lacks the required columns, or has a row with
            extra or missing fields (the message names the line).
    """
    csv_path = Path(csv_path)
    header, records = read_csv_records(csv_path, "CSV")
    missing = [c for c in FLIPKART_REQUIRED if c not in header]
    if missing:
        raise SourceError(
            f"{csv_path} is not a Flipkart-style CSV: missing column(s) {', '.join(missing)} "
            f"(its header has {len(header)} column(s))"
        )
    base = csv_path.expanduser().resolve().parent
    specs = []
    for line, row in records:
        urls = parse_list_field(row.get("image", ""))
        levels = parse_category_tree(row.get("product_category_tree", ""))
        fields: dict[str, Any] = {
            k: _clean(v) for k, v in row.items() if k not in ("image", "product_category_tree")
        }
        fields["name"] = row.get("product_name", "")
        fields["category"] = levels[0] if levels else ""
        fields["subcategory"] = levels[1] if len(levels) > 1 else ""
        fields["category_path"] = " > ".join(levels)
        for depth in range(3):
            fields[f"category_{depth + 1}"] = levels[depth] if len(levels) > depth else ""
        if "retail_price" in row and "price" not in fields:
            fields["price"] = row["retail_price"]
        fields["label"] = _pick_label(fields, label_column)
        cell = urls[image_index] if len(urls) > image_index else (urls[0] if urls else "")
        source, problem = image_source(cell, base)
        if problem:
            problem = f"line {line}: {problem}"
        specs.append(ItemSpec(str(row["uniq_id"]), source, fields, problem))
    return specs


def demo_available() -> bool:
    """Whether Debian's tuxpaint-stamps-default package is installed."""
    return DEMO_ROOT.is_dir()


def from_demo(root: str | Path = DEMO_ROOT) -> list[ItemSpec]:
    """The demo catalogue: Tux Paint's stamps (photos and drawings of everyday objects).

    Skips the ``symbols`` tree and mirrored duplicates; prefers the PNG where a stamp has both
    PNG and SVG. The first line of a stamp's ``.txt`` file is its name.

    Raises:
        DemoUnavailableError: The package is not installed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DemoUnavailableError(
            f"the demo catalogue needs Debian's {DEMO_PACKAGE} package, which is not installed; "
            "a catalogue can be built from a folder, a CSV or a zip instead"
        )
    stamps: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "symbols" or path.suffix not in (".png", ".svg"):
            continue
        if path.stem.endswith(("_mirror", "_back")):
            continue
        key = rel.with_suffix("").as_posix()
        if key not in stamps or path.suffix == ".png":
            stamps[key] = path
    specs = []
    for key, path in sorted(stamps.items()):
        parts = key.split("/")
        description = path.with_suffix(".txt")
        name = parts[-1].replace("_", " ").replace("-", " ")
        if description.is_file():
            first = description.read_text("utf-8", errors="replace").splitlines()[:1]
            if first and first[0].strip():
                name = first[0].strip().rstrip(".")
        fields = {
            "name": name,
            "category": parts[0],
            "subcategory": parts[1] if len(parts) > 2 else "",
            "path": path.relative_to(root).as_posix(),
            "label": parts[0],
        }
        specs.append(ItemSpec(path_id("tuxpaint/" + key), str(path), fields))
    return specs
