"""Quiets TensorFlow's start-up chatter; imported by ``imgsim/__init__.py`` before anything else.

TensorFlow's C++ core logs through absl before its own log settings apply, so its lines
("All log messages before absl::InitializeLog() ...", "oneDNN custom operations are on ...")
can only be kept off stderr with environment variables read when TensorFlow loads. They are set
here, once, for every entry point (the command line, the app, the benchmarks, the tests), and
only where the user has not set them: a value in the environment always wins.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: Environment read by TensorFlow's C++ core when it loads, with the values imgsim defaults to.
ENVIRONMENT = {
    # 2: warnings and infos off, errors still shown.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # Any value silences "oneDNN custom operations are on"; 0 (oneDNN's reordered kernels off)
    # is the one TensorFlow's note itself offers.
    "TF_ENABLE_ONEDNN_OPTS": "0",
}

#: Python warnings TensorFlow and Keras emit on import or first use that say nothing to our users.
NOISY_WARNING_MODULES = ("tensorflow", "keras", "absl", "google.protobuf")


def quiet() -> None:
    """Sets the environment defaults above and keeps the libraries' start-up notes off stderr.

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


quiet()
