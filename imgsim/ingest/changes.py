"""A catalogue that changes: add and remove items without rebuilding.

Both go through the catalogue's one ingestion loop (:mod:`imgsim.ingest.catalog`) and end in one
atomic commit of the items table; the stores catch up in :func:`imgsim.build.refresh`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from imgsim.ingest import download, safety, sources
from imgsim.ingest.catalog import (
    OK,
    SVG_KINDS,
    Catalog,
    _clean_up,
    _commit,
    _counts,
    _ingest_specs,
    _items_table,
    refuse_repeated_ids,
    refuse_too_many,
)
from imgsim.ingest.plan import plan
from imgsim.progress import Progress, silent
from imgsim.storage import layout
from imgsim.storage.artifacts import library_versions, now_iso
from imgsim.storage.lock import locks_catalog


def _image_file_specs(paths: list[Path]) -> list[sources.ItemSpec]:
    """Items for single image files (an id from the file's name, its stem as the name)."""
    return [sources.ItemSpec(id=sources.path_id(p.name), source=str(p.resolve()),
                             fields={"name": p.stem, "category": "", "label": ""}) for p in paths]


def _recommit(catalog: Catalog, items: pd.DataFrame, change: dict[str, Any]) -> Catalog:
    """Commits a changed items table with an updated manifest (one atomic step, then clean-up)."""
    items = _items_table(items)
    manifest = {k: v for k, v in catalog.manifest.items() if k != "items_file"}
    history = list(manifest.get("changes", []))[-49:] + [{**change, "at": now_iso()}]
    manifest.update({**_counts(items), "updated": now_iso(), "changes": history,
                     "library_versions": library_versions()})
    items_file = _commit(catalog.root, items, manifest)
    _clean_up(catalog.root, items_file, items, None)
    return Catalog(catalog.root, {**manifest, "items_file": items_file}, items)


@locks_catalog("root")
def add_items(root: str | os.PathLike, source: str | list[str], *, labels: str | os.PathLike | None = None,
              label_column: str | None = None, download_config: download.DownloadConfig | None = None,
              progress: Progress = silent, max_items: int | None = None) -> tuple[Catalog, dict[str, int]]:
    """Adds the items of ``source`` to the catalogue at ``root``, keeping all it holds.

    ``source`` is a folder, a CSV, a zip, or a list of image files. An item whose id is already
    in the catalogue is updated in place (same row); the others are appended, so existing rows
    keep their order and their stores' rows can be reused. ``max_items`` refuses a source
    listing more items, before any is read (the app passes
    :data:`imgsim.ingest.catalog.ANONYMOUS_MAX_ITEMS`).

    Returns:
        The catalogue and counts: ``added``, ``updated``, ``failed``.

    Raises:
        CatalogError: No catalogue at ``root``.
        sources.SourceError: The source cannot be read, lists no items, or repeats an id (two
            image files of the same name, a CSV with an id twice) or lists more than
            ``max_items``; nothing is changed then.
    """
    catalog = Catalog.load(root)
    if isinstance(source, list):
        paths = [Path(p).expanduser() for p in source]
        for path in paths:
            safety.check_regular_file(path)
        kind, specs = "images", _image_file_specs(paths)
    else:
        kind, specs = plan(source, labels, label_column, unpack_dir=layout.sources_dir(catalog.root))
    refuse_too_many(specs, max_items)
    refuse_repeated_ids(specs, source)
    previous = {r["id"]: r for r in catalog.items.to_dict("records")}
    rows, _ = _ingest_specs(catalog.root, specs, previous, allow_svg=kind in SVG_KINDS,
                            download_config=download_config, progress=progress)
    new = pd.DataFrame(rows).fillna("").astype(str).set_index("id", drop=False)
    items = catalog.items.set_index("id", drop=False)
    updated = items.index.intersection(new.index)
    for column in new.columns.difference(items.columns):
        items[column] = ""
    items.loc[updated, new.columns] = new.loc[updated]
    items = pd.concat([items, new.loc[new.index.difference(items.index, sort=False)]])
    counts = {"added": int(len(new) - len(updated)), "updated": int(len(updated)),
              "failed": int((new["status"] != OK).sum())}
    return _recommit(catalog, items.reset_index(drop=True), {"added_from": str(source)[:500], **counts}), counts


@locks_catalog("root")
def remove_items(root: str | os.PathLike, ids: list[str]) -> tuple[Catalog, int]:
    """Removes the items with these ids from the catalogue at ``root`` (one atomic commit).

    Returns:
        The catalogue and how many items were removed.

    Raises:
        CatalogError: No catalogue at ``root``.
        ValueError: None of ``ids`` is in the catalogue (the message names a few of them).
    """
    catalog = Catalog.load(root)
    wanted = set(map(str, ids))
    gone = catalog.items["id"].isin(wanted)
    if not gone.any():
        sample = ", ".join(sorted(wanted)[:3])
        raise ValueError(f"no item of catalogue {catalog.name} has any of these ids: {sample}")
    removed = int(gone.sum())
    return _recommit(catalog, catalog.items[~gone].copy(), {"removed": removed}), removed
