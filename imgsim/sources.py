"""Where catalogue items come from: a folder of images, a Flipkart-style CSV, or the demo.

Each source is turned into a list of :class:`ItemSpec` (a stable id, where to read the image,
and its metadata) without touching any pixels; :mod:`imgsim.catalog` does the reading.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".svg"}
)
DEMO_ROOT = Path("/usr/share/tuxpaint/stamps")
DEMO_PACKAGE = "tuxpaint-stamps-default"
NAME_COLUMNS = ("name", "product_name", "productDisplayName", "title")
CATEGORY_COLUMNS = ("category", "subCategory", "masterCategory")
FLIPKART_REQUIRED = ("uniq_id", "product_name", "image")


class SourceError(ValueError):
    """A source cannot be read at all (missing folder, wrong CSV columns, no demo package)."""


@dataclasses.dataclass(frozen=True)
class ItemSpec:
    """One item to ingest.

    Attributes:
        id: Stable identifier (a product id, or a hash of the source path).
        source: A file path or an http(s) URL.
        fields: Metadata: ``name``, ``category``, ``label`` and any extra columns.
    """

    id: str
    source: str
    fields: dict[str, Any]

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


def from_folder(
    root: str | Path, labels_csv: str | Path | None = None, label_column: str | None = None
) -> list[ItemSpec]:
    """Lists the images under ``root`` (recursively) with their metadata.

    Without a labels CSV the first sub-folder is the category and the second the sub-category.
    With one, rows are joined on its ``path`` column (relative to ``root``); its other columns
    become metadata, and ``name``/``category``/``label`` are taken from the usual column names.

    Args:
        root: The folder.
        labels_csv: Optional CSV with a ``path`` column.
        label_column: The column that becomes ``label`` (default: ``label``, else the category).

    Raises:
        SourceError: The folder does not exist, holds no images, or the CSV lacks ``path``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder")
    files = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    rows: dict[str, dict[str, Any]] = {}
    if labels_csv is not None:
        table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
        if "path" not in table.columns:
            raise SourceError(
                f"{labels_csv} needs a `path` column (relative to {root}). "
                f"Received columns: {', '.join(table.columns)}"
            )
        rows = {str(r["path"]).removeprefix("./"): dict(r) for r in table.to_dict("records")}
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
        specs.append(ItemSpec(item_id, str(path), fields))
    for rel, row in rows.items():
        if rel not in seen:  # listed in the CSV but not on disk: kept, and reported as missing
            fields = {k: _clean(v) for k, v in row.items()}
            fields["label"] = _pick_label(fields, label_column)
            specs.append(ItemSpec(str(row.get("id") or path_id(rel)), str(root / rel), fields))
    return specs


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


def from_flipkart_csv(
    csv_path: str | Path, label_column: str | None = None, image_index: int = 0
) -> list[ItemSpec]:
    """Reads a CSV shaped like Kaggle's ``flipkart_com-ecommerce_sample.csv``.

    ``image`` holds a list of URLs (the ``image_index``-th is used); ``product_category_tree``
    becomes ``category`` (level 1), ``subcategory`` (level 2), ``category_path`` and
    ``category_N`` columns.

    Raises:
        SourceError: The file is unreadable or lacks the required columns.
    """
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SourceError(f"cannot read {csv_path}: {err}") from err
    missing = [c for c in FLIPKART_REQUIRED if c not in table.columns]
    if missing:
        raise SourceError(
            f"{csv_path} is not a Flipkart-style CSV: missing column(s) {', '.join(missing)}. "
            f"Received columns: {', '.join(table.columns[:12])}"
        )
    specs = []
    for row in table.to_dict("records"):
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
        url = urls[image_index] if len(urls) > image_index else (urls[0] if urls else "")
        specs.append(ItemSpec(str(row["uniq_id"]), url, fields))
    return specs


def demo_available() -> bool:
    """Whether Debian's tuxpaint-stamps-default package is installed."""
    return DEMO_ROOT.is_dir()


def from_demo(root: str | Path = DEMO_ROOT) -> list[ItemSpec]:
    """The demo catalogue: Tux Paint's stamps (photos and drawings of everyday objects).

    Skips the ``symbols`` tree and mirrored duplicates; prefers the PNG where a stamp has both
    PNG and SVG. The first line of a stamp's ``.txt`` file is its name.

    Raises:
        SourceError: The package is not installed, with the command that installs it.
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(
            f"the demo catalogue needs Debian's {DEMO_PACKAGE} package "
            f"(sudo apt-get install -y {DEMO_PACKAGE}); or build a catalogue from a folder or "
            "CSV: python -m imgsim build PATH --out CATALOG"
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
