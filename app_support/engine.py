"""Streamlit caching, here and only here: engines, evaluation reports, maps, and builds.

One engine per catalogue per process (``st.cache_resource``), so models and stores load once,
not per rerun or per page, and are shared by every session.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pandas as pd
import streamlit as st

import imgsim
from app_support.text import plain
from app_support.uploads import public_message


@st.cache_resource(show_spinner="Loading the catalogue and its models (first time only)…", max_entries=4)
def _engine(path: str, version: str) -> imgsim.Engine:
    gc.unfreeze()  # an engine evicted from this cache (a rebuilt catalogue) can then be collected
    engine = imgsim.Engine.open(path)
    engine.warm_up()
    # Streamlit runs a full garbage collection after every script run, twice (its own
    # postScriptGC and Keras's clear_session); over TensorFlow's ~470k objects each costs ~0.5 s
    # of CPU. Frozen objects are skipped by every later collection, and the models live as long
    # as the process anyway.
    gc.collect()
    gc.freeze()
    return engine


def _keep_keras_state() -> None:
    """Stops Streamlit from calling ``keras.backend.clear_session()`` after every script run.

    Streamlit does it for scripts that build Keras models on each run; here models are built
    once per process (``st.cache_resource``) and shared by all sessions, and the call empties
    TensorFlow's kernel cache, which makes the next query of every session ~1 s slower (CPU)
    while its kernels are made again. Matplotlib figures are still closed as Streamlit does.
    """
    from streamlit.runtime.scriptrunner import script_runner

    def clean_problem_modules() -> None:
        import sys

        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")

    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = clean_problem_modules


_keep_keras_state()


def engine_for(path: Path) -> imgsim.Engine:
    """The process-wide engine of the catalogue at ``path`` (a new one once it is rebuilt)."""
    return _engine(str(path), imgsim.current_version(path))


@st.cache_data(show_spinner="Scoring every item against all the others…", max_entries=16)
def evaluation(path: str, version: str, label_column: str) -> dict:
    """Leave-one-out report at k = 10 with precision curves to k = 20 (cached per catalogue state)."""
    return engine_for(Path(path)).evaluate(label_column, 10, curve_k=20)


@st.cache_data(show_spinner=False, max_entries=16)
def strengths(path: str, version: str) -> dict[str, str]:
    """What each approach was measured to be good at on the catalogue (cached per catalogue state)."""
    return engine_for(Path(path)).strengths()


@st.cache_data(show_spinner=False, max_entries=16)
def embedding_map(path: str, version: str, approach: str) -> pd.DataFrame:
    """A 2-D map of the catalogue in one approach's space (cached per catalogue state)."""
    return engine_for(Path(path)).embedding_map(approach)


STAGE_LABELS = {"ingest": "Importing images", "pretrained": "Indexing with the pretrained CNN",
                "decode": "Preparing training images", "train": "Training the autoencoder",
                "autoencoder": "Indexing with the autoencoder", "tuned": "Tuning on photos of the products"}


def progress_text(stage: str, done: int, total: int, message: str) -> str:
    """A build's progress line; ``message`` (often an item's name) is shown as plain text."""
    return plain(f"{STAGE_LABELS.get(stage, stage)}: {done}/{total} {message}")


def build_with_progress(source: str, out: Path, options: imgsim.BuildOptions | None = None) -> imgsim.Catalog | None:
    """Runs a build with a progress bar per stage; shows errors in plain words, without server paths.

    Returns:
        The catalogue when it was built; None when an error was shown instead.
    """
    bar = st.progress(0.0, text="Starting…")

    def stage(name: str):
        def report(done: int, total: int, message: str) -> None:
            bar.progress(min(done / max(total, 1), 1.0), text=progress_text(name, done, total, message))
        return report

    try:
        catalog = imgsim.build_catalog(source, out, options or imgsim.BuildOptions(), progress=stage)
    except (imgsim.ImgsimError, ValueError, OSError) as err:
        bar.empty()
        st.error("The build stopped: " + public_message(err))
        return None
    bar.progress(1.0, text="Done")
    return catalog
