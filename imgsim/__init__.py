"""imgsim: image similarity search for product catalogues.

The engine behind the Streamlit app and the ``python -m imgsim`` command line. It never imports
streamlit, and importing it does not load TensorFlow: models load when first used.

The public API is what ``__all__`` lists; the app's pages use nothing else. Names are imported
lazily on first use, so ``import imgsim`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

import imgsim._quiet  # noqa: F401 (before any submodule: TensorFlow reads its settings when it loads)

__version__ = "0.2.0"

_EXPORTS = {
    # errors
    "ImgsimError": "imgsim.errors",
    # searching
    "Engine": "imgsim.engine",
    "SearchResult": "imgsim.engine",
    "Reconstruction": "imgsim.engine",
    "decode_query": "imgsim.engine",
    "Condition": "imgsim.index.conditions",
    "current_version": "imgsim.engine",
    # approaches
    "APPROACHES": "imgsim.approaches",
    "approach_names": ("imgsim.approaches", "names"),
    "get_approach": ("imgsim.approaches", "get"),
    "register_approach": ("imgsim.approaches", "register"),
    "learning_approaches": ("imgsim.approaches", "learners"),
    "reconstructing_approach": ("imgsim.approaches", "reconstructor"),
    "Drift": "imgsim.approaches",
    # building and changing catalogues
    "BuildOptions": "imgsim.build",
    "build_catalog": ("imgsim.build", "build"),
    "retrain": "imgsim.build",
    "refresh": "imgsim.build",
    "add_items": "imgsim.ingest.changes",
    "remove_items": "imgsim.ingest.changes",
    "default_demo_path": "imgsim.build",
    "Catalog": "imgsim.ingest.catalog",
    "CatalogError": "imgsim.ingest.catalog",
    "list_catalogs": "imgsim.ingest.catalog",
    "default_catalog_path": "imgsim.storage.layout",
    "demo_available": "imgsim.ingest.sources",
    "SourceError": "imgsim.ingest.sources",
    "data_dir": "imgsim.storage.layout",
    "uploads_dir": "imgsim.storage.layout",
    "ArtifactError": "imgsim.storage.artifacts",
    "valid_catalog_name": "imgsim.storage.layout",
    # analyses: why similar, near-duplicates
    "explain": "imgsim.analysis.explain",
    "ExplainConfig": "imgsim.analysis.explain",
    "Explanation": "imgsim.analysis.explain",
    "UnknownItemError": "imgsim.analysis.explain",
    "find_duplicates": "imgsim.analysis.duplicates",
    "DuplicateConfig": "imgsim.analysis.duplicates",
    "DuplicateReport": "imgsim.analysis.duplicates",
    # input
    "decode_image": "imgsim.ingest.images",
    "ImageDecodeError": "imgsim.ingest.images",
    "local_roots": "imgsim.ingest.safety",
    "check_local_path": "imgsim.ingest.safety",
    # what an app user may list and change
    "searchable_catalogs": "imgsim.ingest.catalog",
    "ANONYMOUS_MAX_ITEMS": "imgsim.ingest.catalog",
    "issue_edit_key": "imgsim.storage.edit_keys",
    "check_edit_key": "imgsim.storage.edit_keys",
    "has_edit_key": "imgsim.storage.edit_keys",
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
