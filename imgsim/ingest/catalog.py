"""Catalogues: a directory with an items table, thumbnails and a manifest.

Layout::

    CATALOG/
      manifest.json        kind "catalog", format version, source, counts, and the name of the
                           items table: the single commit point of every update
      items-<hash>.parquet one row per item: id, source, name, category, label, status, message,
                           thumb, sha256 (of the encoded source bytes), plus any metadata
                           columns of the source (all strings)
      thumbs/<id>-<sha>.jpg  the decoded image, orientation fixed, alpha on white, longest side 256
      downloads/<id>-<url hash>.<ext>  original bodies of downloaded images
      sources/<sha256>/    an unpacked zip source
      stores/<approach>/   embedding stores (see :mod:`imgsim.storage.stores`)

Ingestion never stops for one bad item: every row ends with a ``status`` and a ``message``.
An update writes everything new under new names (the items table is named by its hash,
thumbnails by their image's hash), then replaces ``manifest.json`` atomically, then deletes
what the new manifest no longer names. A kill at any moment leaves the previous catalogue
loadable, and running the same import again finishes the job, redoing only what is missing,
failed, or whose bytes changed.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import io
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgsim.ingest import download, safety, sources
from imgsim.ingest.images import (
    MAX_BYTES,
    MAX_SVG_BYTES,
    THUMB_SIDE,
    ImageDecodeError,
    load_square,
    rasterize_svg,
    thumbnail,
)
from imgsim.ingest.plan import plan
from imgsim.progress import Progress, silent
from imgsim.storage import layout
from imgsim.storage.artifacts import (
    ArtifactError,
    library_versions,
    now_iso,
    read_manifest,
    sha256_text,
    write_bytes_atomic,
    write_json_atomic,
)
from imgsim.storage.lock import locks_catalog

FORMAT_VERSION = 2
KIND = "catalog"
MANIFEST = "manifest.json"
#: How many times :meth:`Catalog.load` reads the manifest again when a writer replaced the items table it named.
READ_ATTEMPTS = 5
CORE_COLUMNS = ("id", "source", "name", "category", "label", "status", "message", "thumb", "sha256", "added_at")

OK = download.OK
MISSING_FILE = "missing_file"
FAILED_TO_DECODE = download.FAILED_TO_DECODE
FAILED_TO_RASTERIZE = "failed_to_rasterize"
REFUSED = "refused"
TOO_LARGE = download.TOO_LARGE

#: Source kinds whose folders may hold SVG drawings (never URLs or CSV paths).
SVG_KINDS = frozenset({"demo", "folder", "zip_folder"})


class CatalogError(ArtifactError):
    """A catalogue cannot be built or loaded; the message says why."""


class CatalogNotFoundError(CatalogError):
    """No catalogue is at ``root`` (building one there makes it).

    Attributes:
        root: The directory given.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(f"no catalogue at {root}")
        self.root = root


class CatalogOutdatedError(CatalogError):
    """The catalogue at ``root`` cannot be read as it is; building it again from its source fixes it.

    Attributes:
        root: The catalogue's directory.
    """

    def __init__(self, root: Path, message: str) -> None:
        super().__init__(message)
        self.root = root


def file_stem(item_id: str) -> str:
    """A file-name-safe stem for an id (ids from CSVs may hold slashes or spaces)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", item_id)[:80]
    if safe != item_id:
        safe += "-" + sha256_text(item_id)[:8]
    return safe


def content_fingerprint(ids: list[str], hashes: list[str]) -> str:
    """sha256 of ``id:sha256`` lines: changes when an item is added, removed or its bytes change."""
    return sha256_text(*(f"{i}:{h}" for i, h in zip(ids, hashes)))


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
            CatalogNotFoundError: No catalogue is there.
            CatalogOutdatedError: It was written by an incompatible version, or the items table
                its manifest names is missing.
            CatalogError: The manifest is unreadable or belongs to another kind of artifact.
        """
        root = Path(root).expanduser()
        if not root.is_dir():
            raise CatalogNotFoundError(root)
        # A writer commits a new items table and manifest, then deletes the old table: a reader
        # that read the old manifest just before reads the manifest again (a bounded few times).
        for attempt in range(READ_ATTEMPTS):
            manifest = cls._read_manifest(root)
            items_file = str(manifest.get("items_file") or "")
            if not re.fullmatch(r"items-[0-9a-f]{16}\.parquet", items_file):
                break
            try:
                items = pd.read_parquet(root / items_file)
            except FileNotFoundError:
                if attempt + 1 < READ_ATTEMPTS and cls._read_manifest(root).get("items_file") != items_file:
                    continue
                break
            return cls(root, manifest, items)
        raise CatalogOutdatedError(
            root, f"{root}: the items table {items_file or '(none)'} named by its manifest is missing, "
            "so it must be built again from its source"
        )

    @staticmethod
    def _read_manifest(root: Path) -> dict[str, Any]:
        try:
            manifest = read_manifest(root, KIND)
        except ArtifactError as err:
            raise CatalogError(str(err)) from err
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CatalogOutdatedError(
                root, f"{root} has catalogue format {manifest.get('format_version')}; this imgsim reads "
                f"format {FORMAT_VERSION}, so it must be built again from its source"
            )
        return manifest

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
        """sha256 of the ingested items' ``id:sha256`` lines, in order.

        A store built for another list of items, or for items whose bytes have since changed,
        is stale.
        """
        hashes = self.ok["sha256"] if "sha256" in self.ok.columns else self.ok["source"]
        return content_fingerprint(self.ok["id"].tolist(), hashes.tolist())

    @property
    def identity(self) -> str:
        """What tells this catalogue from any other: its stored uuid and its root, hashed (16 hex).

        Two catalogues of one name in different folders, or a copied folder, differ; a catalogue
        made before uuids were stored is told apart by its root alone.
        """
        root = str(self.root.expanduser().resolve())
        return hashlib.sha256(f"{self.manifest.get('uuid', '')}\0{root}".encode()).hexdigest()[:16]

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


def _download_path(root: Path, spec: sources.ItemSpec) -> Path:
    """Where a URL's body is cached: named by the id and the URL, so a new URL is a new file."""
    suffix = Path(spec.source.split("?")[0]).suffix.lower()
    suffix = suffix if suffix in sources.IMAGE_SUFFIXES and suffix != ".svg" else ".img"
    return layout.downloads_dir(root) / f"{file_stem(spec.id)}-{sha256_text(spec.source)[:10]}{suffix}"


def _read_source(
    spec: sources.ItemSpec,
    root: Path,
    session: Any,
    config: download.DownloadConfig,
    *,
    refresh: bool = False,
) -> tuple[str, str, bytes | None]:
    """Fetches one item's encoded bytes: returns (status, message, bytes or None).

    A URL's body is downloaded once and cached under ``downloads/``; ``refresh`` downloads it
    again. A local file is read whole (it is hashed on every run, so a change is noticed).
    """
    if spec.problem:
        return REFUSED, spec.problem, None
    if spec.is_url:
        cached = _download_path(root, spec)
        if cached.is_file() and not refresh:
            try:
                return OK, "", safety.read_regular_file(cached, MAX_BYTES)
            except safety.FileRefusedError:
                pass  # a damaged cache entry: download again
        result = download.fetch(session, spec.source, config)
        if result.status != OK:
            return result.status, result.message, None
        write_bytes_atomic(cached, result.content)
        return OK, "", result.content
    if not spec.source:
        return MISSING_FILE, "the row names no image", None
    path = Path(spec.source)
    limit = MAX_SVG_BYTES if path.suffix.lower() == ".svg" else MAX_BYTES
    try:
        return OK, "", safety.read_regular_file(path, limit)
    except safety.FileRefusedError as err:
        message = str(err).replace(str(path), path.name, 1)
        if "does not exist" in message:
            return MISSING_FILE, f"file not found: {path}", None
        if "limit" in message:
            return TOO_LARGE, message, None
        return REFUSED, message, None


def _ingest_one(
    spec: sources.ItemSpec,
    root: Path,
    session: Any,
    config: download.DownloadConfig,
    previous: dict[str, Any] | None = None,
    *,
    allow_svg: bool = False,
    refresh: bool = False,
) -> dict[str, Any]:
    """Reads, hashes, decodes and thumbnails one item; never raises for bad content.

    If ``previous`` (this id's row from the last run) has the same source and the same
    sha256 and its thumbnail is present, it is kept without decoding again.
    """
    row = {**{k: str(v) for k, v in spec.fields.items()}, "id": spec.id, "source": spec.source}
    status, message, data = _read_source(spec, root, session, config, refresh=refresh)
    row["sha256"] = hashlib.sha256(data).hexdigest() if data is not None else ""
    if status == OK and previous is not None and previous.get("status") == OK \
            and previous.get("source") == spec.source and previous.get("sha256") == row["sha256"] \
            and previous.get("thumb") and (root / previous["thumb"]).is_file():
        row.update({k: previous[k] for k in ("status", "message", "thumb")})
        row["up_to_date"] = True
        return row
    if status == OK:
        name = Path(spec.source.split("?")[0]).name or spec.id
        try:
            if Path(spec.source).suffix.lower() == ".svg" and not spec.is_url and allow_svg:
                status = FAILED_TO_RASTERIZE  # until it is drawn
                data = rasterize_svg(data, 2 * THUMB_SIDE, name)
                status = OK
            rgb, jpeg = thumbnail(data)  # as a query's whole-photo vector is made (self-score 1)
        except ImageDecodeError as err:
            status = FAILED_TO_RASTERIZE if status == FAILED_TO_RASTERIZE else FAILED_TO_DECODE
            message = str(err).replace("the image: ", f"{name}: ", 1)
        else:
            thumb = f"thumbs/{file_stem(spec.id)}-{row['sha256'][:12]}.jpg"
            write_bytes_atomic(root / thumb, jpeg)
            row["thumb"] = thumb
            message = f"{rgb.shape[1]}x{rgb.shape[0]}"
    row["status"], row["message"] = status, message
    row.setdefault("thumb", "")
    return row


def _previous_rows(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The rows and manifest of the catalogue at ``root``, if one of this format is there.

    An older format, or a manifest whose items table is gone, gives no rows (the build starts
    afresh and replaces it); a directory holding another kind of artifact is refused.
    """
    if not (root / MANIFEST).is_file():
        return {}, {}
    try:
        manifest = read_manifest(root, KIND)
    except ArtifactError as err:
        raise CatalogError(f"{root} is not a catalogue, so it is left alone: {err}") from err
    try:
        old = Catalog.load(root)
    except CatalogError:
        return {}, manifest
    return {r["id"]: r for r in old.items.to_dict("records")}, manifest


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _commit(root: Path, items: pd.DataFrame, manifest: dict[str, Any]) -> str:
    """Writes the items table under its hash, then the manifest that names it (the commit)."""
    buffer = io.BytesIO()
    items.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    items_file = f"items-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
    write_bytes_atomic(root / items_file, data, durable=True)
    write_json_atomic(root / MANIFEST, {**manifest, "items_file": items_file})
    return items_file


def _clean_up(root: Path, items_file: str, items: pd.DataFrame, source_dir: Path | None) -> None:
    """Deletes what the committed manifest no longer names: old tables, thumbnails, unpacked zips."""
    for old in root.glob("items*.parquet"):
        if old.name != items_file:
            old.unlink(missing_ok=True)
    keep = {Path(t).name for t in items["thumb"] if t}
    thumbs = layout.thumbs_dir(root)
    if thumbs.is_dir():
        for old in thumbs.glob("*.jpg"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
    unpacked = layout.sources_dir(root)
    if unpacked.is_dir():
        for old in unpacked.iterdir():
            if source_dir is None or old.name != source_dir.name:
                shutil.rmtree(old, ignore_errors=True)


@locks_catalog("out")
def ingest(
    source: str,
    out: str | os.PathLike,
    *,
    labels: str | os.PathLike | None = None,
    label_column: str | None = None,
    download_config: download.DownloadConfig | None = None,
    progress: Progress = silent,
    refresh_downloads: bool = False,
    max_items: int | None = None,
) -> Catalog:
    """Builds or refreshes the catalogue at ``out`` from ``source``.

    Every item's bytes are read and hashed (``sha256`` column); an item whose id, source and
    hash match the last run and whose thumbnail is present is kept as it is, the rest, failed
    ones included, are (re)decoded. So a changed local file is noticed on the next run. A URL's
    body is downloaded once and cached; ``refresh_downloads=True`` downloads every URL again
    and notices changed bodies the same way (a changed URL in the CSV is always a new download).

    Args:
        source: A folder, a Flipkart-style ``.csv``, a ``.zip`` of either, or ``"demo"``.
        out: The catalogue directory (created if needed).
        labels: For folders, an optional labels CSV joined on its ``path`` column.
        label_column: The metadata column copied into ``label`` (used by evaluation).
        download_config: Workers, timeouts, retries and size caps for URL sources.
        progress: Called as items finish.
        refresh_downloads: Download URL items again instead of using the cached bodies.
        max_items: Refuse a source listing more items (None: no bound; see
            :data:`ANONYMOUS_MAX_ITEMS`).

    Returns:
        The refreshed :class:`Catalog`.

    Raises:
        sources.SourceError: The source cannot be read at all.
        CatalogError: ``out`` holds something that is not a catalogue.
    """
    root = Path(out).expanduser()
    previous, old_manifest = _previous_rows(root)
    kind, specs = plan(source, labels, label_column, unpack_dir=layout.sources_dir(root))
    refuse_too_many(specs, max_items)
    refuse_repeated_ids(specs, source)
    root.mkdir(parents=True, exist_ok=True)
    rows, up_to_date = _ingest_specs(root, specs, previous, allow_svg=kind in SVG_KINDS,
                                     download_config=download_config, progress=progress,
                                     refresh=refresh_downloads)
    items = _items_table(pd.DataFrame(rows))
    source_dir = layout.sources_dir(root) / _sha256_file(Path(source)) if kind.startswith("zip_") else None
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "source": source if kind == "demo" else str(Path(source).expanduser().resolve()),
        "source_kind": kind,
        "labels": str(labels) if labels else None,
        "label_column": label_column or "label",
        "thumb_side": THUMB_SIDE,
        **_counts(items),
        "n_up_to_date": int(up_to_date),
        "created": old_manifest.get("created", now_iso()),
        # Names what is exported of this catalogue (Milvus collections); copies stay apart by root.
        "uuid": old_manifest.get("uuid") or uuid.uuid4().hex,
        "updated": now_iso(),
        "library_versions": library_versions(),
    }
    items_file = _commit(root, items, manifest)
    _clean_up(root, items_file, items, source_dir)
    return Catalog(root, {**manifest, "items_file": items_file}, items)


def list_catalogs(base: str | os.PathLike | None = None) -> list[Path]:
    """Catalogue directories under ``base`` (default ``<data dir>/catalogs``), sorted by name."""
    base = Path(base) if base is not None else layout.catalogs_dir()
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if (p / MANIFEST).is_file())


def searchable_catalogs(base: str | os.PathLike | None = None) -> list[Path]:
    """The catalogues of :func:`list_catalogs` with at least one ok item (others have nothing to search).

    Only manifests are read, not items tables; an unreadable manifest leaves its catalogue out.
    """
    found = []
    for path in list_catalogs(base):
        try:
            if int(read_manifest(path, KIND).get("n_ok", 0)) > 0:
                found.append(path)
        except (ArtifactError, OSError, TypeError, ValueError):
            continue
    return found


# -- shared with imgsim.ingest.changes: one ingestion loop for builds and adds ----------------------

def stamp_added(rows: list[dict[str, Any]], previous: dict[str, dict[str, Any]]) -> None:
    """Sets each row's ``added_at``: kept from its previous row, else now (in place).

    With it, ``info`` tells which items came after a model was trained.
    """
    now = now_iso()
    for row in rows:
        row["added_at"] = str((previous.get(row["id"]) or {}).get("added_at") or now)


#: Items one upload from an anonymous browser user may list (the app passes it as ``max_items``).
ANONYMOUS_MAX_ITEMS = 5000


def refuse_too_many(specs: list[sources.ItemSpec], max_items: int | None) -> None:
    """Refuses a source listing more than ``max_items`` items, before anything is read or downloaded.

    Raises:
        sources.SourceError: Too many items (the message says how many, and the bound).
    """
    if max_items is not None and len(specs) > max_items:
        raise sources.SourceError(f"the source lists {len(specs):,} items; at most {max_items:,} are accepted "
                                  "from one upload")


def refuse_repeated_ids(specs: list[sources.ItemSpec], source: str | list[str]) -> None:
    """Refuses a source with no items, or with an id more than once (a table's ids are unique).

    Args:
        specs: The items a source lists.
        source: What they came from, for the message.

    Raises:
        sources.SourceError: No items, or repeated ids; the message names up to three of them,
            how often each comes and where from (rows of a CSV share a URL or a path; two image
            files of the same name share their id).
    """
    # Files are named by their folder and name only: the message may reach a browser, server paths stay out of it.
    what = "these image files" if isinstance(source, list) else Path(str(source)).name or str(source)
    if not specs:
        raise sources.SourceError(f"{what} lists no items")
    where: dict[str, list[str]] = {}
    for spec in specs:
        path = Path(spec.source)
        shown = spec.source if "://" in spec.source else "/".join(part for part in (path.parent.name, path.name) if part)
        where.setdefault(spec.id, []).append(shown)
    repeated = [(item_id, found) for item_id, found in where.items() if len(found) > 1]
    if repeated:
        examples = "; ".join(f"{item_id} ({len(found)} times: {', '.join(sorted(set(found))[:3])})"
                             for item_id, found in repeated[:3])
        verb = "repeat" if isinstance(source, list) else "repeats"
        raise sources.SourceError(f"{what} {verb} item ids (ids must be unique): {examples}"
                                  + (f"; and {len(repeated) - 3} more" if len(repeated) > 3 else ""))


def _ingest_specs(root: Path, specs: list[sources.ItemSpec], previous: dict[str, dict[str, Any]], *,
                  allow_svg: bool, download_config: download.DownloadConfig | None,
                  progress: Progress, refresh: bool = False) -> tuple[list[dict[str, Any]], int]:
    """Reads, decodes and thumbnails ``specs`` in parallel: the one ingestion loop.

    Each row ends with a status and an ``added_at`` stamp. ``refresh`` downloads URLs again.

    Returns:
        The rows, in the order of ``specs``, and how many were kept up to date from ``previous``.
    """
    config = download_config or download.DownloadConfig()
    session = download.make_session(config) if any(s.is_url for s in specs) else None
    workers = config.workers if session is not None else min(4, os.cpu_count() or 1)
    rows: list[dict[str, Any]] = [{}] * len(specs)
    done = up_to_date = 0
    progress(0, len(specs), "reading")
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_ingest_one, spec, root, session, config, previous.get(spec.id),
                               allow_svg=allow_svg, refresh=refresh): i for i, spec in enumerate(specs)}
        for future in cf.as_completed(futures):
            row = future.result()
            up_to_date += bool(row.pop("up_to_date", False))
            rows[futures[future]] = row
            done += 1
            progress(done, len(specs), str(specs[futures[future]].fields.get("name", ""))[:40])
    stamp_added(rows, previous)
    return rows, up_to_date


def _items_table(items: pd.DataFrame) -> pd.DataFrame:
    """The core columns first, then the metadata, every cell a string, indexed 0..n-1."""
    for column in CORE_COLUMNS:
        if column not in items.columns:
            items[column] = ""
    extras = [c for c in items.columns if c not in CORE_COLUMNS]
    return items[list(CORE_COLUMNS) + extras].fillna("").astype(str).reset_index(drop=True)


def _counts(items: pd.DataFrame) -> dict[str, Any]:
    """The manifest's counts and content fingerprint of an items table."""
    counts = items["status"].value_counts().to_dict()
    ok = items[items["status"] == OK]
    return {"n_items": int(len(items)), "n_ok": int(counts.get(OK, 0)),
            "status_counts": {k: int(v) for k, v in counts.items()},
            "fingerprint": content_fingerprint(ok["id"].tolist(), ok["sha256"].tolist())}
