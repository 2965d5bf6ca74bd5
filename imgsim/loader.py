"""Loading and caching what an engine uses: stores, models, search backends, region embedders.

Everything loads once, on first use, under one lock (the app shares an engine between sessions'
threads). An approach that cannot be used gets its reason in plain words instead of an error.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from imgsim import approaches as approaches_mod
from imgsim.index import Metric, Opening, SearchBackend
from imgsim.index.factory import open_backend, read_backend
from imgsim.ingest.catalog import Catalog
from imgsim.storage import layout
from imgsim.storage.artifacts import ArtifactError
from imgsim.storage.stores import Store, model_spec


def artifact_version(catalog: Catalog) -> str:
    """Changes whenever the catalogue, one of its stores or one of its models is rewritten.

    A cache key for anything derived from the catalogue's artifacts (the app's engine cache).
    """
    digest = hashlib.sha256(str(catalog.root.resolve()).encode())
    files = [layout.manifest_path(catalog.root), layout.backend_file(catalog.root),
             *sorted(catalog.root.glob("stores/*/manifest.json")),
             *sorted(catalog.root.glob("models/*/manifest.json"))]
    for path in files:
        try:
            digest.update(f"{path.relative_to(catalog.root)}:{path.stat().st_mtime_ns}".encode())
        except FileNotFoundError:
            continue
    return digest.hexdigest()[:16]


def current_version(path: str | os.PathLike) -> str:
    """:func:`artifact_version` of the catalogue at ``path`` without loading its items."""
    return artifact_version(Catalog(Path(path), {}, pd.DataFrame()))


class Loader:
    """Loads a catalogue's stores, models, backends and region embedders once each.

    Args:
        catalog: The catalogue.
        items: Its items as the engine shows them (row-aligned with every store).
        lock: The engine's lock (re-entrant: loading a model may load another's).
    """

    def __init__(self, catalog: Catalog, items: pd.DataFrame, lock: threading.RLock) -> None:
        self.catalog = catalog
        self.items = items
        self.lock = lock
        self.record = read_backend(catalog)
        self._stores: dict[str, Store] = {}
        self._models: dict[str, Any] = {}
        self._backends: dict[tuple[str, str], SearchBackend] = {}
        self._problems: dict[str, str] = {}
        self._embedders: dict[str, Any] = {}
        self.no_regions: dict[str, str] = {}
        self._lines: dict[str, Any] = {}
        self.no_line: dict[str, str] = {}

    # -- stores ----------------------------------------------------------------------------------

    def store_or_none(self, approach: str) -> Store | None:
        """The store of ``approach``, or None (its reason kept for :meth:`problem`)."""
        with self.lock:
            if approach in self._stores:
                return self._stores[approach]
            spec = approaches_mod.get(approach)
            root = spec.store_dir(self.catalog)
            if not root.exists():
                self._problems[approach] = spec.not_built_reason(self.catalog)
                return None
            try:
                store = Store.load(root, self.catalog)
            except ArtifactError as err:
                self._problems[approach] = str(err)
                return None
            self._stores[approach] = store
            return store

    def problem(self, approach: str) -> str:
        """Why ``approach`` has no store, in plain words."""
        return self._problems.get(approach, "not built")

    def store(self, approach: str) -> Store:
        """The store of ``approach``; raises ``ValueError`` saying why it is unavailable."""
        approaches_mod.get(approach)
        store = self.store_or_none(approach)
        if store is None:
            raise ValueError(f"{approach} is not available for {self.catalog.name}: {self._problems[approach]}")
        return store

    def approaches(self) -> list[str]:
        """Approaches whose store is built and current, in display order."""
        return [a for a in approaches_mod.APPROACHES if self.store_or_none(a) is not None]

    # -- models ----------------------------------------------------------------------------------

    def model(self, approach: str):
        """The model that embeds queries for ``approach``, loaded once and checked against its store.

        Raises:
            ValueError: The approach has no store.
            imgsim.storage.stores.StoreMismatchError: The model on disk is not the one the store was built with.
        """
        with self.lock:
            if approach in self._models:
                return self._models[approach]
            store = self.store(approach)
            model = approaches_mod.get(approach).load_model(self.catalog, store.manifest, self.model)
            Store.load(store.root, self.catalog, model_spec(approach, model))
            self._models[approach] = model
            return model

    # -- search backends -------------------------------------------------------------------------

    def backend(self, approach: str, metric: str | None = None) -> SearchBackend:
        """The search backend of ``approach``'s store (opened once per metric by the factory)."""
        store = self.store(approach)
        metric = Metric(metric or store.manifest.get("metric", "cosine"))
        key = (approach, metric.value)
        with self.lock:
            if key not in self._backends:
                opening = Opening(self.catalog, approach, store, self.items, metric, self.record,
                                  lambda: model_spec(approach, self.model(approach)))
                self._backends[key] = open_backend(opening)
            return self._backends[key]

    def close(self) -> None:
        """Closes every backend opened so far; safe to call twice (they open again when used)."""
        with self.lock:
            backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            backend.close()

    # -- region search -----------------------------------------------------------------------------

    def region_embedder(self, approach: str):
        """The :class:`imgsim.approaches.regions.RegionEmbedder` for ``approach``, or None where it has none.

        The approach says whether its store's queries can be regions and whose feature map they
        pool (:meth:`imgsim.approaches.base.Approach.region_support`).
        """
        from imgsim.approaches.regions import RegionConfig, RegionEmbedder

        with self.lock:
            if approach in self._embedders:
                return self._embedders[approach]
            support = approaches_mod.get(approach).region_support(self.store(approach).manifest)
            embedder = None
            if support.extractor is not None:
                shared = next((e for e in self._embedders.values()
                               if e is not None and e.extractor_name == support.extractor), None)
                embedder = shared or RegionEmbedder(support.extractor, RegionConfig())
            why = support.reason
            self.no_regions[approach] = why or ""
            self._embedders[approach] = embedder
            return embedder

    # -- the no-good-match line ------------------------------------------------------------------

    def match_threshold(self, approach: str):
        """The :class:`imgsim.calibration.MatchThreshold` of ``approach``, loaded once, or None.

        None where there is none or it was made for another model; the reason, in plain words,
        is kept in :attr:`no_line`.
        """
        from imgsim.calibration import MIN_ITEMS, load_threshold

        with self.lock:
            if approach in self._lines:
                return self._lines[approach]
            store = self.store(approach)
            root = layout.match_dir(self.catalog.root, approach)
            line, why = None, ""
            if not root.exists():
                why = (f"fewer than {MIN_ITEMS} items: no line" if len(self.items) < MIN_ITEMS
                       else "no no-good-match line was calibrated")
            else:
                try:
                    line = load_threshold(root, approach, store.manifest)
                except ArtifactError as err:
                    why = f"the no-good-match line is ignored: {err}"
            self.no_line[approach] = why
            self._lines[approach] = line
            return line
