"""The one error base of imgsim.

Every error imgsim raises on purpose derives from :class:`ImgsimError`, so the command line and
the app each catch it once and show its message, never a traceback. Errors keep their built-in
base too (``ValueError`` for bad input, ``RuntimeError`` for a broken artifact or service), so
callers that caught those before still do.

Messages are plain words a browser may show: they never name a shell command. The command line
adds its own hint (see :mod:`imgsim.cli`).
"""

from __future__ import annotations


class ImgsimError(Exception):
    """Base of every error imgsim raises on purpose."""
