"""One writer per catalogue at a time: a lock file holding the writer's pid.

Every command that changes a catalogue (build, ingest, add, remove, refresh, train, export) holds
``CATALOG/.writer.lock`` while it runs. The file is created with ``O_CREAT | O_EXCL`` and holds
the holder's pid, host and process start time. A second writer waits up to a bound and then gets
a one-line :class:`CatalogBusyError`; a lock whose holder is dead (killed) is taken over. Readers
(the engine, queries) never take it: they read committed versions only.

Within one process the lock is re-entrant (a build takes it, then ingests, which takes it again)
and threads (the app's sessions) take turns on it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from imgsim.storage import swap
from imgsim.storage.artifacts import ArtifactError, writing
from imgsim.storage.layout import LOCK_FILE, SWAPPED

T = TypeVar("T")
#: How long a writer waits for another one by default (seconds); ``IMGSIM_LOCK_WAIT`` overrides it.
WAIT_SECONDS = 60.0
#: A lock file still empty after this long was left by a writer killed while creating it.
EMPTY_GRACE_SECONDS = 10.0
# The folders of a catalogue whose artifacts are swapped in (see imgsim.storage.swap).

_guard = threading.Lock()
_held: dict[Path, list] = {}  # lock path -> [thread lock, depth]


class CatalogBusyError(ArtifactError):
    """Another process is changing the catalogue, and it did not finish within the wait."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a reused pid from the holder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process that wrote ``holder`` still runs (on another host: assume it does)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _start_time(pid)
    return started is None or holder.get("started") in (None, started)


def _read(path: Path) -> dict | None:
    """The lock's holder, ``{}`` for an empty or unreadable file, ``None`` when there is no lock."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _stale(path: Path, holder: dict) -> bool:
    if not holder:  # a writer killed between creating the file and writing its pid
        try:
            return time.time() - path.stat().st_mtime > EMPTY_GRACE_SECONDS
        except FileNotFoundError:
            return True
    if int(holder.get("pid", 0)) == os.getpid() and holder.get("host") == socket.gethostname():
        return True  # our own pid, but this process holds no lock: left by a crashed earlier writer
    return not _alive(holder)


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid()),
              "since": time.time()}
    try:
        os.write(fd, json.dumps(holder).encode())  # no fsync: a lock outlives no reboot
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _take_over(path: Path, holder: dict) -> None:
    """Removes a stale lock, unless another waiter replaced it meanwhile."""
    aside = path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != holder:  # another waiter took over first and this is a live writer's lock
        with contextlib.suppress(OSError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def _acquire_file(path: Path, name: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        with writing(path):
            if _try_create(path):
                return
        holder = _read(path)
        if holder is not None and _stale(path, holder):
            _take_over(path, holder)
            continue
        if time.monotonic() >= deadline:
            pid = (holder or {}).get("pid", "unknown")
            raise CatalogBusyError(f"catalogue {name} is busy: another change is running (pid {pid})")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def wait_seconds() -> float:
    """The writer's wait bound: ``IMGSIM_LOCK_WAIT`` seconds if set, else :data:`WAIT_SECONDS`."""
    try:
        return max(0.0, float(os.environ.get("IMGSIM_LOCK_WAIT", WAIT_SECONDS)))
    except ValueError:
        return WAIT_SECONDS


@contextlib.contextmanager
def writer_lock(root: str | os.PathLike, wait: float | None = None) -> Iterator[None]:
    """Holds the writer lock of the catalogue at ``root`` for the block.

    On first taking it, whatever a killed writer left half-swapped in ``stores/`` and ``models/``
    is finished or rolled back (see :func:`imgsim.storage.swap.recover_all`).

    Args:
        root: The catalogue directory (created if missing: a build may start there; removed
            again if the block left it empty).
        wait: Seconds to wait for another writer; default :func:`wait_seconds`.

    Raises:
        CatalogBusyError: Another live process held the lock for longer than ``wait``.
        StorageWriteError: The lock file could not be written (a full disk, ...).
    """
    root = Path(root).expanduser()
    created = not root.exists()
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
    path = (root / LOCK_FILE).resolve()
    wait = wait_seconds() if wait is None else wait
    with _guard:
        entry = _held.setdefault(path, [threading.RLock(), 0])
    thread_lock = entry[0]
    if not thread_lock.acquire(timeout=wait) if wait > 0 else not thread_lock.acquire(blocking=False):
        raise CatalogBusyError(f"catalogue {root.name} is busy: another change is running (pid {os.getpid()})")
    try:
        if entry[1] == 0:
            _acquire_file(path, root.name, wait)
        entry[1] += 1
        try:
            if entry[1] == 1:
                for folder in SWAPPED:
                    swap.recover_all(root / folder)
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                path.unlink(missing_ok=True)
                if created:  # a writer refused before writing anything leaves no empty folder behind
                    with contextlib.suppress(OSError):
                        root.rmdir()
    finally:
        thread_lock.release()


def locks_catalog(argument: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Makes a writer function hold the writer lock of the catalogue it is given.

    Args:
        argument: The name of the function's parameter that holds the catalogue: a
            :class:`imgsim.ingest.catalog.Catalog` (its ``root`` is used) or its directory.
    """
    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args: Any, **kwargs: Any) -> T:
            value = signature.bind(*args, **kwargs).arguments[argument]
            with writer_lock(value if isinstance(value, (str, os.PathLike)) else value.root):
                return function(*args, **kwargs)

        return locked

    return decorate
