"""The numbers a user gives the command line: finite, whole where they must be, and in range.

Each numeric option is parsed by :func:`number`, whose refusals argparse prints as one line with
exit code 2; the ranges are named here (the download ones are
:data:`imgsim.ingest.download.LIMITS`, which :class:`~imgsim.ingest.download.DownloadConfig`
enforces itself).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgsim.approaches.autoencoder.nets import LIMITS as AUTOENCODER_LIMITS
from imgsim.ingest.download import MAX_BYTES_LIMIT

# The range of every number the command line takes, beside the download ones (DownloadConfig's
# own LIMITS). Past them a value is a typo or an attack: 65536 px would allocate 240 GiB.
K_RANGE = (1, 10_000)
MAX_MB_RANGE = (0.01, MAX_BYTES_LIMIT / 2**20)
IMAGE_SIZE_RANGE = AUTOENCODER_LIMITS["image_size"]  # the input side (a power of two for conv)
LATENT_DIM_RANGE = AUTOENCODER_LIMITS["latent_dim"]
EPOCHS_RANGE = AUTOENCODER_LIMITS["epochs"]
RAY_WORKERS_RANGE = (1, 100_000)  # actors in a Ray build's pool (imgsim.distributed.RayConfig)

#: The exit code of a command that ends on a user's mistake (bad input, a missing catalogue).
EXIT_USER_ERROR = 2


def number(kind: type[int] | type[float], low: float, high: float,
           unit: str = "") -> Callable[[str], Any]:
    """An argparse ``type``: a finite number of ``kind`` from ``low`` to ``high``.

    A refusal (not a number, ``inf``, ``nan``, ``1e400``, out of range) is an
    ``ArgumentTypeError``, which the parser prints as one line and exit code 2.

    Args:
        kind: ``int`` (whole numbers; ``1e3`` is accepted as 1000) or ``float``.
        low: Smallest value accepted.
        high: Largest value accepted.
        unit: Appended to the range in messages (``" s"``).

    Returns:
        The function that turns the argument's text into the number.
    """
    def parse(text: str) -> int | float:
        value = _finite(text, kind)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be >= {low:g} and <= {high:g}{unit}, got {_shown(text)}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def span(low: float, high: float) -> str:
    """``"1 to 64"``: a range as help texts state it."""
    return f"{low:g} to {high:g}"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _finite(text: str, kind: type[int] | type[float]) -> int | float:
    """``text`` as a finite ``kind``; ``ArgumentTypeError`` in plain words otherwise."""
    shown = _shown(text)
    what = "a whole number" if kind is int else "a number"
    if kind is int:
        try:
            return int(text)  # exact, however long
        except ValueError:
            pass  # perhaps 1e3, or 12.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {shown}") from None
    if not math.isfinite(value):  # also what float() makes of an overflow such as 1e400
        raise argparse.ArgumentTypeError(f"must be a finite number, got {shown}")
    if kind is int and not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {shown}")
    return int(value) if kind is int else value


def parse_box(text: str | None) -> tuple[int, int, int, int] | None:
    """``--box``: four whole numbers x0,y0,x1,y1 inside the decoded photo, with x0 < x1, y0 < y1."""
    from imgsim.engine import QUERY_MAX_SIDE

    if text is None:
        return None
    parse = number(int, 0, QUERY_MAX_SIDE, " px")
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"`--box` must be x0,y0,x1,y1 in pixels. Received: {_shown(text)}")
    try:
        x0, y0, x1, y1 = (parse(part.strip()) for part in parts)
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"`--box` {err}: it is x0,y0,x1,y1 in pixels of the photo decoded with its "
                         f"longest side at most {QUERY_MAX_SIDE}") from None
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"`--box` must have x0 < x1 and y0 < y1. Received: {_shown(text)}")
    return x0, y0, x1, y1


def resolve_catalog(text: str) -> Path:
    """A catalogue argument: a directory, or the name of one under ``<data dir>/catalogs``."""
    from imgsim.storage.layout import default_catalog_path

    path = Path(text).expanduser()
    if path.exists() or os.sep in text or "/" in text:
        return path
    return default_catalog_path(text)


def approach_list(text: str | None) -> tuple[str, ...] | None:
    """``all`` (or nothing) -> None (every approach that applies), else the comma-separated names."""
    if not text or text.strip() == "all":
        return None
    return tuple(a.strip() for a in text.split(",") if a.strip())
