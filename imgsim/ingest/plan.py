"""What a source string holds: its kind and its items, before anything is read or decoded.

``demo``, a folder, a Flipkart-style ``.csv`` or a ``.zip`` (unpacked with the limits of
:mod:`imgsim.ingest.archive`) become a list of :class:`imgsim.ingest.sources.ItemSpec`.
"""

from __future__ import annotations

import os
from pathlib import Path

from imgsim.ingest import sources


def _zip_contents(folder: Path) -> tuple[str, Path]:
    """What an unpacked zip holds: ``("zip_csv", the CSV)`` or ``("zip_folder", the folder)``.

    A single top-level folder is looked into. A top-level ``.csv`` with the Flipkart columns
    makes it a CSV source (its image paths relative to the CSV); anything else is a folder.
    """
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        folder = entries[0]
    for csv_path in sorted(folder.glob("*.csv")):
        try:
            header, _ = sources.read_csv_records(csv_path, "CSV")
        except sources.SourceError:
            continue
        if all(c in header for c in sources.FLIPKART_REQUIRED):
            return "zip_csv", csv_path
    return "zip_folder", folder


def plan(
    source: str,
    labels: str | os.PathLike | None = None,
    label_column: str | None = None,
    *,
    unpack_dir: str | os.PathLike | None = None,
) -> tuple[str, list[sources.ItemSpec]]:
    """Turns a source string into its kind and item list.

    ``demo`` is the demo catalogue; a folder is a folder of images; a ``.csv`` file is a
    Flipkart-style CSV; a ``.zip`` file is unpacked (with the limits of
    :mod:`imgsim.ingest.archive`) into ``unpack_dir/<sha256 of the zip>`` and read as the folder or
    CSV it holds.

    Args:
        source: ``demo``, a folder, a ``.csv`` or a ``.zip``.
        labels: For folders, an optional labels CSV joined on its ``path`` column.
        label_column: The metadata column copied into ``label``.
        unpack_dir: Where zips are unpacked (``ingest`` passes ``CATALOG/sources``);
            default ``<data dir>/sources``.

    Returns:
        The kind (``demo``, ``folder``, ``flipkart_csv``, ``zip_folder`` or ``zip_csv``) and
        the items.

    Raises:
        SourceError: The source does not exist or cannot be read (an
            :class:`imgsim.ingest.archive.ArchiveError` for a refused zip).
    """
    if source == "demo":
        return "demo", sources.from_demo()
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder", sources.from_folder(path, labels, label_column)
    if path.suffix.lower() == ".csv" and path.exists():
        return "flipkart_csv", sources.from_flipkart_csv(path, label_column)
    if path.suffix.lower() == ".zip" and path.exists():
        from imgsim.ingest.archive import unpack_zip
        from imgsim.storage.layout import data_dir

        unpacked = unpack_zip(path, Path(unpack_dir) if unpack_dir else data_dir() / "sources")
        kind, inner = _zip_contents(unpacked)
        if kind == "zip_csv":
            return kind, sources.from_flipkart_csv(inner, label_column)
        return kind, sources.from_folder(inner, labels, label_column)
    if not path.exists():
        raise sources.SourceError(
            f"{source} does not exist (expected a folder, a .csv, a .zip or 'demo')"
        )
    raise sources.SourceError(f"{source} is neither a folder, a .csv or .zip file, nor 'demo'")
