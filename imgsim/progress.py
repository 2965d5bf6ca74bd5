"""Progress reporting that works for both a terminal (tqdm) and the app (a callback)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    """Called as ``progress(done, total, message)`` while long work runs."""

    def __call__(self, done: int, total: int, message: str) -> None: ...


def silent(done: int, total: int, message: str) -> None:
    """A :class:`Progress` that reports nothing."""


def tqdm_progress(desc: str) -> Callable[[int, int, str], None]:
    """A :class:`Progress` that draws a tqdm bar on stderr, created on the first call.

    The unit is epochs for the ``train`` stage and images otherwise.
    """
    from tqdm.auto import tqdm

    bar = None

    def report(done: int, total: int, message: str) -> None:
        nonlocal bar
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=desc, unit="epoch" if desc == "train" else "img", dynamic_ncols=True)
        bar.set_postfix_str(message[:40], refresh=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return report
