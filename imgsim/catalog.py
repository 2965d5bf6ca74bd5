"""Catalogues: a directory with an items table, thumbnails and a manifest.

Layout::

    CATALOG/
      manifest.json        kind "catalog", format version, source, counts
      items.parquet        one row per item: id, source, name, category, label, status, message,
                           plus any metadata columns of the source (all strings)
      thumbs/<id>.jpg      the decoded image, orientation fixed, alpha on white, longest side 256
      downloads/<id>.<ext> original bodies of downloaded images
      stores/<approach>/   embedding stores (see :mod:`imgsim.store`)

Ingestion never stops for one bad item: every row ends with a ``status`` and a ``message``.
The table and manifest are replaced atomically at the end, so an interrupted import leaves the
previous catalogue intact, and running the same import again only redoes what is missing or
failed.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgsim import download, sources
from imgsim.artifacts import (
    ArtifactError,
    library_versions,
    now_iso,
    read_manifest,
    sha256_text,
    write_bytes_atomic,
    write_json_atomic,
)
from imgsim.images import ImageDecodeError, decode_image, encode_jpeg, load_square
from imgsim.progress import Progress, silent

FORMAT_VERSION = 1
KIND = "catalog"
ITEMS = "items.parquet"
THUMB_SIDE = 256
CORE_COLUMNS = ("id", "source", "name", "category", "label", "status", "message", "thumb")

OK = download.OK
MISSING_FILE = "missing_file"
FAILED_TO_DECODE = download.FAILED_TO_DECODE
FAILED_TO_RASTERIZE = "failed_to_rasterize"


class CatalogError(ArtifactError):
    """A catalogue cannot be built or loaded; the message says why."""


def file_stem(item_id: str) -> str:
    """A file-name-safe stem for an id (ids from CSVs may hold slashes or spaces)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", item_id)[:80]
    if safe != item_id:
        safe += "-" + sha256_text(item_id)[:8]
    return safe


@dataclasses.dataclass
class Catalog:
    """A loaded catalogue.

    Attributes:
        root: Its directory.
        manifest: The parsed ``manifest.json``.
        items: Every row, failed ones included, in a stable order.
    """

    root: Path
    manifest: dict[str, Any]
    items: pd.DataFrame

    @classmethod
    def load(cls, root: str | os.PathLike) -> Catalog:
        """Loads the catalogue at ``root``.

        Raises:
            CatalogError: No catalogue is there, or it was written by an incompatible version.
        """
        root = Path(root).expanduser()
        if not root.is_dir():
            raise CatalogError(f"no catalogue at {root} (build one with: python -m imgsim build)")
        try:
            manifest = read_manifest(root, KIND)
        except ArtifactError as err:
            raise CatalogError(str(err)) from err
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CatalogError(
                f"{root} has catalogue format {manifest.get('format_version')}; this imgsim reads "
                f"format {FORMAT_VERSION}. Rebuild it with: python -m imgsim build"
            )
        items = pd.read_parquet(root / ITEMS)
        return cls(root, manifest, items)

    @property
    def name(self) -> str:
        """The catalogue's directory name."""
        return self.root.name

    @functools.cached_property
    def ok(self) -> pd.DataFrame:
        """The rows whose image was ingested, in catalogue order, indexed 0..n-1.

        Row ``i`` here is row ``i`` of every embedding store of this catalogue.
        """
        ok = self.items[self.items["status"] == OK]
        return ok.reset_index(drop=True)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of the ingested ids in order: a store built for another list is stale."""
        return sha256_text(*self.ok["id"].tolist())

    def thumb_paths(self) -> list[Path]:
        """Thumbnail paths of the ingested items, row-aligned with :attr:`ok`."""
        return [self.root / t for t in self.ok["thumb"]]

    def load_square(self, row: int, size: int) -> np.ndarray:
        """Item ``row`` of :attr:`ok` as the ``(size, size, 3)`` uint8 square a model sees."""
        return load_square(self.root / self.ok["thumb"].iloc[row], size)

    def failures(self) -> pd.DataFrame:
        """Rows that did not ingest, with their status and message."""
        return self.items[self.items["status"] != OK]

    def label_column(self) -> str:
        """The column evaluation uses by default."""
        return str(self.manifest.get("label_column") or "label")


def default_catalog_path(name: str = "demo") -> Path:
    """``<data dir>/catalogs/<name>``."""
    from imgsim.artifacts import data_dir

    return data_dir() / "catalogs" / name


def plan(
    source: str, labels: str | os.PathLike | None = None, label_column: str | None = None
) -> tuple[str, list[sources.ItemSpec]]:
    """Turns a source string into its kind and item list.

    ``demo`` is the demo catalogue; a folder is a folder of images; a ``.csv`` file is a
    Flipkart-style CSV.

    Raises:
        sources.SourceError: The source does not exist or cannot be read.
    """
    if source == "demo":
        return "demo", sources.from_demo()
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder", sources.from_folder(path, labels, label_column)
    if path.is_file() and path.suffix.lower() == ".csv":
        return "flipkart_csv", sources.from_flipkart_csv(path, label_column)
    if not path.exists():
        raise sources.SourceError(f"{source} does not exist (expected a folder, a .csv or 'demo')")
    raise sources.SourceError(f"{source} is neither a folder, a .csv file, nor 'demo'")


def _read_source(
    spec: sources.ItemSpec, root: Path, session: Any, config: download.DownloadConfig
) -> tuple[str, str, Any]:
    """Fetches one item's encoded image: returns (status, message, path-or-bytes)."""
    if spec.is_url:
        stem = file_stem(spec.id)
        cached = next((root / "downloads").glob(f"{glob_escape(stem)}.*"), None)
        if cached is not None:
            return OK, "", cached
        result = download.fetch(session, spec.source, config)
        if result.status != OK:
            return result.status, result.message, None
        suffix = Path(spec.source.split("?")[0]).suffix.lower()
        suffix = suffix if suffix in sources.IMAGE_SUFFIXES else ".img"
        target = root / "downloads" / f"{stem}{suffix}"
        write_bytes_atomic(target, result.content)
        return OK, "", target
    path = Path(spec.source)
    if not path.is_file():
        return MISSING_FILE, f"file not found: {path}", None
    if path.suffix.lower() == ".svg":
        import cairosvg

        try:
            return OK, "", cairosvg.svg2png(url=str(path), output_width=2 * THUMB_SIDE)
        except (ValueError, OSError, SyntaxError, TypeError, KeyError) as err:
            return FAILED_TO_RASTERIZE, f"{path.name}: SVG could not be drawn ({type(err).__name__}: {err})", None
    return OK, "", path


def glob_escape(text: str) -> str:
    """Escapes glob metacharacters in a file stem."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _ingest_one(
    spec: sources.ItemSpec, root: Path, session: Any, config: download.DownloadConfig
) -> dict[str, Any]:
    """Reads, decodes and thumbnails one item; never raises for bad content."""
    row = {**{k: str(v) for k, v in spec.fields.items()}, "id": spec.id, "source": spec.source}
    status, message, data = _read_source(spec, root, session, config)
    if status == OK:
        try:
            rgb = decode_image(data, max_side=THUMB_SIDE)
        except ImageDecodeError as err:
            status, message = FAILED_TO_DECODE, str(err)
        else:
            thumb = f"thumbs/{file_stem(spec.id)}.jpg"
            write_bytes_atomic(root / thumb, encode_jpeg(rgb))
            row["thumb"] = thumb
            message = f"{rgb.shape[1]}x{rgb.shape[0]}"
    row["status"], row["message"] = status, message
    row.setdefault("thumb", "")
    return row


def ingest(
    source: str,
    out: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    label_column: str | None = None,
    download_config: download.DownloadConfig | None = None,
    progress: Progress = silent,
) -> Catalog:
    """Builds or refreshes the catalogue at ``out`` from ``source``.

    Items already ingested (same id and source, thumbnail present) are kept as they are; the
    rest, failed ones included, are (re)tried.

    Args:
        source: A folder, a Flipkart-style ``.csv`` or ``"demo"``.
        out: The catalogue directory (created if needed).
        labels: For folders, an optional labels CSV joined on its ``path`` column.
        label_column: The metadata column copied into ``label`` (used by evaluation).
        download_config: Workers, timeouts, retries and size caps for URL sources.
        progress: Called as items finish.

    Returns:
        The refreshed :class:`Catalog`.

    Raises:
        sources.SourceError: The source cannot be read at all.
        CatalogError: ``out`` holds something that is not a catalogue.
    """
    kind, specs = plan(source, labels, label_column)
    if not specs:
        raise sources.SourceError(f"{source} lists no items")
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        dupes = pd.Series(ids)[pd.Series(ids).duplicated()].unique()[:3]
        raise sources.SourceError(f"{source} repeats item ids, e.g. {', '.join(map(str, dupes))}")
    root = Path(out).expanduser()
    previous: dict[str, dict[str, Any]] = {}
    if (root / ITEMS).exists():
        old = Catalog.load(root)
        previous = {r["id"]: r for r in old.items.to_dict("records")}
    root.mkdir(parents=True, exist_ok=True)
    config = download_config or download.DownloadConfig()
    session = download.make_session(config) if any(s.is_url for s in specs) else None

    rows: list[dict[str, Any] | None] = [None] * len(specs)
    todo = []
    for i, spec in enumerate(specs):
        old_row = previous.get(spec.id)
        if (
            old_row is not None
            and old_row["status"] == OK
            and old_row["source"] == spec.source
            and (root / old_row["thumb"]).is_file()
        ):
            rows[i] = {**{k: str(v) for k, v in spec.fields.items()}, **{
                k: old_row[k] for k in ("id", "source", "status", "message", "thumb")
            }}
        else:
            todo.append(i)
    done = len(specs) - len(todo)
    progress(done, len(specs), f"{done} up to date")
    workers = config.workers if session is not None else min(4, os.cpu_count() or 1)
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_ingest_one, specs[i], root, session, config): i for i in todo}
        for future in cf.as_completed(futures):
            rows[futures[future]] = future.result()
            done += 1
            progress(done, len(specs), specs[futures[future]].fields.get("name", "")[:40])

    items = pd.DataFrame(rows)
    for column in CORE_COLUMNS:
        if column not in items.columns:
            items[column] = ""
    extras = [c for c in items.columns if c not in CORE_COLUMNS]
    items = items[list(CORE_COLUMNS) + extras].fillna("").astype(str)
    tmp = root / f".{ITEMS}.tmp"
    items.to_parquet(tmp, index=False)
    os.replace(tmp, root / ITEMS)
    counts = items["status"].value_counts().to_dict()
    old_manifest = {}
    if (root / "manifest.json").exists():
        old_manifest = read_manifest(root, KIND)
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "source": source if kind == "demo" else str(Path(source).expanduser().resolve()),
        "source_kind": kind,
        "labels": str(labels) if labels else None,
        "label_column": label_column or "label",
        "thumb_side": THUMB_SIDE,
        "n_items": int(len(items)),
        "n_ok": int(counts.get(OK, 0)),
        "status_counts": {k: int(v) for k, v in counts.items()},
        "fingerprint": sha256_text(*items.loc[items["status"] == OK, "id"].tolist()),
        "created": old_manifest.get("created", now_iso()),
        "updated": now_iso(),
        "library_versions": library_versions(),
    }
    write_json_atomic(root / "manifest.json", manifest)
    return Catalog(root, manifest, items)


def list_catalogs(base: str | os.PathLike | None = None) -> list[Path]:
    """Catalogue directories under ``base`` (default ``<data dir>/catalogs``), sorted by name."""
    base = Path(base) if base is not None else default_catalog_path("x").parent
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / "manifest.json").is_file() and (p / ITEMS).is_file())
