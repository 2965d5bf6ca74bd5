"""Starts the app with the default catalogue's models loaded before the first visit.

Streamlit runs no app code until a browser connects, so a bare ``streamlit run`` makes its first
visitor wait for TensorFlow and the models (12-13 s on the demo). This launcher opens the default
catalogue's engine first, through the app's own process-wide cache (``app_support.engine``), and
then runs ``streamlit run streamlit_app.py`` in the same process: once the server answers its
health check, the first page a visitor opens is as fast as the next.

Usage: python scripts/serve.py [streamlit run options, e.g. --server.port 8501]
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Streamlit's loggers that warn when its API is used before the server runs a script.
BARE_MODE_LOGGERS = ("streamlit.runtime.caching.cache_data_api",
                     "streamlit.runtime.scriptrunner_utils.script_run_context")


def warm_up() -> None:
    """Opens the engine the sidebar picks first (the demo, else the first catalogue listed)."""
    import streamlit  # noqa: F401 (creates its loggers, with their levels, before ours are set)

    import imgsim

    # Outside a script run Streamlit warns that there is no runtime and no script context yet; both
    # are expected here (the cache it fills is the process-wide one the app then reads).
    quiet = [logging.getLogger(name) for name in BARE_MODE_LOGGERS]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    started = time.perf_counter()
    try:
        from app_support.engine import engine_for

        catalogs = imgsim.searchable_catalogs()
        if not catalogs:
            return
        names = [p.name for p in catalogs]
        engine_for(catalogs[names.index("demo") if "demo" in names else 0])
    except (imgsim.ImgsimError, OSError, ValueError) as err:  # the app shows it to the visitor
        print(f"warm-up skipped: {err}", file=sys.stderr)
        return
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    print(f"warm-up: models loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def local_command(port: int) -> list[str]:
    """The command that serves the app headless on 127.0.0.1:``port`` (browser tests, screenshots)."""
    return [sys.executable, str(Path(__file__).resolve()), "--server.headless", "true", "--server.address",
            "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]


def main() -> int:
    """Warms up, then runs the Streamlit server (which returns only when stopped)."""
    sys.path.insert(0, str(ROOT))  # `app_support` as the app imports it: one module, one cache
    warm_up()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(ROOT / "streamlit_app.py"), *sys.argv[1:]]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
