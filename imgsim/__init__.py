"""imgsim: image similarity search for product catalogues.

The engine behind the Streamlit app and the ``python -m imgsim`` command line. It never imports
streamlit, and importing it does not load TensorFlow: models load when first used.

The public API is what ``__all__`` lists; the app's pages use nothing else. Names are imported
lazily on first use, so ``import imgsim`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    # searching
    "Engine": "imgsim.engine",
    "SearchResult": "imgsim.engine",
    "Reconstruction": "imgsim.engine",
    "decode_query": "imgsim.engine",
    "current_version": "imgsim.engine",
    # approaches
    "APPROACHES": "imgsim.approaches",
    "approach_names": ("imgsim.approaches", "names"),
    # building and changing catalogues
    "BuildOptions": "imgsim.build",
    "build_catalog": ("imgsim.build", "build"),
    "retrain": "imgsim.build",
    "refresh": "imgsim.build",
    "add_items": "imgsim.catalog",
    "remove_items": "imgsim.catalog",
    "default_demo_path": "imgsim.build",
    "Catalog": "imgsim.catalog",
    "CatalogError": "imgsim.catalog",
    "list_catalogs": "imgsim.catalog",
    "default_catalog_path": "imgsim.catalog",
    "demo_available": "imgsim.sources",
    "SourceError": "imgsim.sources",
    "data_dir": "imgsim.artifacts",
    "ArtifactError": "imgsim.artifacts",
    "valid_catalog_name": "imgsim.catalog",
    # input
    "decode_image": "imgsim.images",
    "ImageDecodeError": "imgsim.images",
    "local_roots": "imgsim.safety",
    "check_local_path": "imgsim.safety",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    """Imports a public name from its module on first use."""
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'imgsim' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
