"""Quiets TensorFlow's start-up chatter; imported by ``imgsim/__init__.py`` before anything else.

TensorFlow's C++ core writes a few lines straight to file descriptor 2 while its libraries load
("All log messages before absl::InitializeLog() ...", "oneDNN custom operations are on ...",
twice), before any of its log settings apply. :func:`tensorflow_imported` loads TensorFlow and
Keras with descriptor 2 pointed at a temporary file, so those lines never reach the user's
terminal or the app's log; if the import fails, what was written is replayed on stderr, so a
broken installation still says why. oneDNN stays as TensorFlow configures it (its kernels are
the fast ones on x86 CPUs): only its notice is hidden.

Later messages follow ``TF_CPP_MIN_LOG_LEVEL`` (default 2 here: errors only) and Python's
logging and warnings, set in :func:`quiet`. A value a user set in the environment always wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

#: Environment read by TensorFlow's C++ core when it loads, with the values imgsim defaults to.
ENVIRONMENT = {
    # 2: warnings and infos off, errors still shown.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "KERAS_BACKEND": "tensorflow",
}

#: Python warnings TensorFlow and Keras emit on import or first use that say nothing to our users.
NOISY_WARNING_MODULES = ("tensorflow", "keras", "absl", "google.protobuf")

_IMPORT_LOCK = threading.Lock()


def quiet() -> None:
    """Sets the environment defaults above and keeps the libraries' Python-side notes off stderr.

    The ``absl`` logger gets level ERROR unless someone gave it a level already.
    Warnings are filtered only when the interpreter got no ``-W`` option or ``PYTHONWARNINGS``
    (``sys.warnoptions`` is empty), so a user who asks for warnings sees them.
    """
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    absl = logging.getLogger("absl")  # TensorFlow's Python side logs here ("WARNING:absl:...")
    if absl.level == logging.NOTSET:
        absl.setLevel(logging.ERROR)
    if not sys.warnoptions:
        for module in NOISY_WARNING_MODULES:
            warnings.filterwarnings("ignore", module=rf"{module.replace('.', '[.]')}(\.|$)")


@contextlib.contextmanager
def _stderr_descriptor_captured() -> Iterator[None]:
    """Points file descriptor 2 at a temporary file; replays it on stderr if the body raises."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (an embedded interpreter): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def tensorflow_imported():
    """Imports TensorFlow and Keras (once, without their start-up lines) and returns ``keras``."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        import keras

        return keras
    with _IMPORT_LOCK, _stderr_descriptor_captured():
        import keras
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # retracing notices for a short last batch are noise here
    return keras


quiet()
