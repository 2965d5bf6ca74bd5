"""The whole build of a searchable catalogue: ingest, then each approach; redoing only what is stale.

Building is the only step that writes artifacts (catalogue, models, stores); the engine only
reads them. Each approach builds itself (see :mod:`imgsim.approaches`); this module decides
which ones run and in what order.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from imgsim import approaches as approaches_mod
from imgsim.approaches import NotApplicableError, load_squares
from imgsim.ingest import catalog as catalog_mod
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.download import DownloadConfig
from imgsim.progress import Progress, silent
from imgsim.storage import layout
from imgsim.storage.lock import locks_catalog

ProgressFactory = Callable[[str], Progress]
ANN_POLICIES = ("auto", "always", "never", "keep")
# An in-place update keeps a graph until removed rows (tombstones) pass this share of its nodes;
# then the graph is rebuilt (compacted). Searches skip tombstones, so this only bounds waste.
# The IVF-PQ index keeps the same share.
COMPACT_SHARE = 0.2
# From this many rows a store's index is IVF-PQ (imgsim.index.ivfpq) instead of HNSW; below
# AnnConfig.min_rows (200,000) it has none and is searched exactly (`ann="always"` then gives an
# HNSW graph). Measured by benchmarks/search.py --ann (README "Scaling"): at 200k the HNSW graph
# (M16, efC64) recalled 0.78-0.87; IVF-PQ recalled 0.999 at 100k and 0.994 at 1M x 1280 (1.3 ms
# p50, 1.3 GB), built in 39-76 s and 410-1,250 s on 2 shared cores.
IVFPQ_MIN_ROWS = 200_000
# Fields of the IvfPqConfig such a store is indexed with (none: its defaults).
IVFPQ_SETTINGS: Mapping[str, Any] = types.MappingProxyType({})
__all__ = ["BuildOptions", "build", "build_approaches", "default_demo_path", "export", "load_squares", "refresh", "retrain"]


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What ``build`` makes.

    Attributes:
        approaches: Names from :data:`imgsim.approaches.APPROACHES`; ``None`` (the default) means
            every approach that applies to the catalogue (one that cannot is skipped, with a
            message). Dependencies are added (``tuned`` needs
            ``pretrained``).
        settings: Per approach, by name, its settings (an instance of the approach's
            ``settings_type``, e.g. ``{"autoencoder": AutoencoderConfig(epochs=5)}``); an
            approach not named here gets its ``default_settings``.
        labels: Labels CSV for folder sources.
        label_column: Column copied into ``label`` (and pulled together by ``tuned`` by default).
        download: Download settings for CSV sources.
        ann: ``auto`` gives a store an approximate index beside its exact matrix once it has
            :attr:`imgsim.index.hnsw.AnnConfig.min_rows` rows (HNSW, or IVF-PQ from
            :data:`IVFPQ_MIN_ROWS`); ``always`` and ``never`` force it;
            ``keep`` (what refresh uses) updates an index that exists and otherwise acts as ``auto``.
        learn: False keeps every learned model as it is and never trains one (after adding or
            removing items); True (default) trains what is missing or was trained otherwise.
        max_items: Refuse a source listing more items, before any is read (the app's uploads).
    """

    approaches: tuple[str, ...] | None = None
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    labels: str | None = None
    label_column: str | None = None
    download: DownloadConfig = DownloadConfig()
    ann: str = "auto"
    learn: bool = True
    max_items: int | None = None

    def __post_init__(self) -> None:
        if self.max_items is not None and (isinstance(self.max_items, bool) or not isinstance(self.max_items, int)
                                           or self.max_items < 1):
            raise ValueError(f"`max_items` must be None or an int >= 1. Received: max_items={self.max_items!r}")
        if self.ann not in ANN_POLICIES:
            raise ValueError(f"`ann` must be one of {', '.join(ANN_POLICIES)}. Received: ann={self.ann!r}")
        if self.approaches is not None:
            unknown = set(self.approaches) - set(approaches_mod.APPROACHES)
            if unknown or not self.approaches:
                raise ValueError(
                    f"`approaches` must be a non-empty subset of {', '.join(approaches_mod.APPROACHES)}. "
                    f"Received: {','.join(self.approaches)}"
                )
        for name, settings in self.settings.items():
            approaches_mod.get(name).check_settings(settings)
        object.__setattr__(self, "settings", types.MappingProxyType(dict(self.settings)))

    def settings_of(self, approach: str) -> Any:
        """The settings ``approach`` is built with: the ones given, else its defaults."""
        given = self.settings.get(approach)
        return given if given is not None else approaches_mod.get(approach).default_settings(self)


@locks_catalog("catalog")
def build_approaches(catalog: Catalog, options: BuildOptions = BuildOptions(), *,
                     progress: ProgressFactory = lambda stage: silent,
                     log: Callable[[str], None] = lambda message: None) -> list[str]:
    """Builds each requested approach of an ingested catalogue that is missing or stale.

    Returns:
        The approaches that are built and current afterwards.

    Raises:
        NotApplicableError: An approach asked for by name cannot apply to this catalogue.
    """
    explicit = options.approaches is not None
    names = approaches_mod.with_dependencies(options.approaches or tuple(approaches_mod.APPROACHES))
    done = []
    for name in names:
        try:
            approaches_mod.get(name).build(catalog, options.settings_of(name), log=log, progress=progress,
                                           learn=options.learn)
        except NotApplicableError as err:
            if explicit:
                raise
            log(f"{name}: skipped: {err}")
            continue
        ensure_ann(catalog, name, options.ann, log)
        done.append(name)
    from imgsim.calibration import calibrate

    calibrate(catalog, done, log=log)  # the no-good-match line of each store missing or stale one
    _record_strengths(catalog, log)  # what each approach is good at here, for the app to say
    return done


def ann_path(catalog: Catalog, approach: str) -> Path:
    """Where a store's approximate index lives: ``CATALOG/stores/<approach>.ann``."""
    return approaches_mod.get(approach).store_dir(catalog).with_name(f"{approach}.ann")


def ensure_ann(catalog: Catalog, approach: str, policy: str = "auto",
               log: Callable[[str], None] = lambda message: None) -> None:
    """Builds, updates or drops the approximate index of ``approach``'s store as ``policy`` says.

    The kind follows the store's size: HNSW from :attr:`imgsim.index.hnsw.AnnConfig.min_rows`
    rows, IVF-PQ from :data:`IVFPQ_MIN_ROWS` (an index of the other kind is dropped). An index
    that still matches the store's embeddings is kept. One built for an earlier state of the
    store (items added or removed since) is updated in place, keeping its ``build_id``: new rows
    inserted, removed rows tombstoned; it is rebuilt (compacted) only once tombstones pass
    :data:`COMPACT_SHARE` of its nodes, or when it cannot be read.
    """
    from imgsim.index.hnsw import should_use_ann
    from imgsim.storage.artifacts import remove_artifact
    from imgsim.storage.stores import Store

    store_dir = approaches_mod.get(approach).store_dir(catalog)
    paths = {"hnsw": ann_path(catalog, approach), "ivfpq": layout.ivfpq_dir(store_dir, approach)}
    store = Store.load(store_dir, catalog)
    if policy == "keep":
        policy = "always" if any(p.is_dir() for p in paths.values()) else "auto"
    n_rows = len(store.embeddings)
    wanted = policy == "always" or (policy == "auto" and should_use_ann(n_rows))
    kind = "ivfpq" if n_rows >= IVFPQ_MIN_ROWS else "hnsw"
    for other, other_path in paths.items():
        if other != kind or not wanted:
            remove_artifact(other_path)
    if not wanted:
        return
    import time

    from imgsim.index.hnsw import AnnConfig, AnnIndex
    from imgsim.index.ivfpq import IvfPqConfig, IvfPqIndex

    started = time.perf_counter()
    path = paths[kind]
    if kind == "ivfpq":
        index, changed = _ann_in_place(path, store, log, lambda p: IvfPqIndex.load(p, None, mmap=False))
    else:
        index, changed = _ann_in_place(path, store, log, lambda p: AnnIndex.load(p, None))
    if index is None:
        metric = store.manifest.get("metric", "cosine")
        if kind == "ivfpq":
            index = IvfPqIndex.build(store.embeddings, metric, IvfPqConfig(**IVFPQ_SETTINGS))
            log(f"{approach}: compressed (IVF-PQ) index over {index.size} rows built")
        else:
            # A filter keeping up to 20k rows is answered exactly over them: through the graph a 17.7%
            # filter recalled only 0.77-0.82 (benchmarks/search.py --ann), and 20k exact rows cost ~5 ms.
            index = AnnIndex.build(store.embeddings, metric, AnnConfig(exact_below=20_000))
            log(f"{approach}: approximate (HNSW) index over {index.size} rows built")
    elif not changed:
        log(f"{approach}: approximate index up to date")
        return
    index.save(path)
    log(f"{approach}: approximate index saved in {time.perf_counter() - started:.1f} s")


def _ann_in_place(path: Path, store: Any, log: Callable[[str], None],
                  load: Callable[[Path], Any]) -> tuple[Any, bool]:
    """The index at ``path`` (read by ``load``, unchecked) made to mirror ``store`` in place, and whether that changed it.

    ``(None, True)`` when it must be rebuilt: unreadable, another metric or dim, or past
    :data:`COMPACT_SHARE` tombstones once updated.
    """
    from imgsim.index.hnsw import embeddings_fingerprint
    from imgsim.storage.artifacts import ArtifactError

    try:
        index = load(path)  # checked against the store here, loaded once
    except ArtifactError:
        return None, True
    if str(index.metric) != store.manifest.get("metric", "cosine") or index.dim != store.embeddings.shape[1]:
        return None, True
    if index.fingerprint == embeddings_fingerprint(store.embeddings):
        return index, False
    removed, added = index.follow(store.embeddings)
    nodes = index.size + index.tombstones
    if index.tombstones > COMPACT_SHARE * nodes:
        log(f"{path.stem}: {index.tombstones} of {nodes} indexed rows removed (over {COMPACT_SHARE:.0%}): "
            "compacting")
        return None, True
    log(f"{path.stem}: approximate index updated in place ({added} rows added, {removed} removed)")
    return index, True


@locks_catalog("out")
def build(
    source: str,
    out: str | os.PathLike,
    options: BuildOptions = BuildOptions(),
    *,
    progress: ProgressFactory = lambda stage: silent,
    log: Callable[[str], None] = lambda message: None,
) -> Catalog:
    """Ingests ``source`` into ``out`` and builds each requested approach that is missing or stale.

    Args:
        source: A folder, a Flipkart-style CSV, a zip of images, or ``demo``.
        out: The catalogue directory.
        options: What to build.
        progress: Gives a :class:`Progress` for each stage name.
        log: Receives one line per stage (what was done or skipped).

    Returns:
        The catalogue.
    """
    catalog = catalog_mod.ingest(
        source, out, labels=options.labels, label_column=options.label_column,
        download_config=options.download, progress=progress("ingest"), max_items=options.max_items,
    )
    counts = catalog.items["status"].value_counts().to_dict()
    log("ingested: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    if len(catalog.ok) == 0:
        raise catalog_mod.CatalogError(f"no image of {source} could be ingested; see the items' messages")
    build_approaches(catalog, options, progress=progress, log=log)
    return catalog


@locks_catalog("catalog")
def retrain(catalog: Catalog, approach: str, options: BuildOptions = BuildOptions(), *,
            progress: ProgressFactory = lambda stage: silent,
            log: Callable[[str], None] = lambda message: None) -> None:
    """Retrains a learning approach on the catalogue as it is now, then re-indexes it.

    Adding and removing items never retrains (new items are embedded with the model as it is);
    this is the on-demand step: the autoencoder is trained again, the tuned head refitted.

    Raises:
        ValueError: ``approach`` learns nothing (``pretrained``).
    """
    learners = approaches_mod.learners()
    if approach not in learners:
        raise ValueError(f"`approach` must be one that learns ({', '.join(learners)}). Received: {approach!r}")
    approaches_mod.get(approach).retrain(catalog, options.settings_of(approach), log=log, progress=progress)
    from imgsim.calibration import calibrate

    calibrate(Catalog.load(catalog.root), (approach,), log=log)  # the retrained model needs its own line
    _record_strengths(Catalog.load(catalog.root), log)


def _record_strengths(catalog: Catalog, log: Callable[[str], None]) -> None:
    """Saves the evaluation report the app's approach descriptions read (:func:`imgsim.strengths.record`)."""
    from imgsim.engine import Engine
    from imgsim.strengths import record

    engine = Engine(catalog)
    try:
        record(engine, log=log)
    finally:
        engine.close()


def built_approaches(catalog: Catalog) -> tuple[str, ...]:
    """The approaches that have a store in ``catalog``, in build order."""
    return tuple(a for a in approaches_mod.names() if approaches_mod.get(a).store_dir(catalog).is_dir())


@locks_catalog("catalog")
def refresh(catalog: Catalog, *, progress: ProgressFactory = lambda stage: silent,
            log: Callable[[str], None] = lambda message: None) -> list[str]:
    """Brings every store the catalogue has up to date with its items, after an add or remove.

    Each approach keeps the model it was built with: it reads its settings back from its own
    manifests (the pretrained extractor and options, the autoencoder as trained, the column the
    projection was fitted on). A store already built for the catalogue as it is, or one that only
    lost rows (a removal), loads no model; the others are rebuilt embedding only new and changed
    items, each model loaded once; nothing is retrained (see :func:`retrain`). Approximate
    indexes are updated in place (see :func:`ensure_ann`), and a vector service gets only the
    changed rows (upserted) and the removed ones (deleted) when it holds the stores as they were.

    Returns:
        The approaches brought up to date.
    """
    from imgsim.index.factory import LOCAL, publish, read_backend
    from imgsim.storage.stores import Store, is_current, restrict_store, store_keys

    catalog = Catalog.load(catalog.root)  # as committed now: another writer may have changed it
    built = built_approaches(catalog)
    if not built:
        return []
    backend = read_backend(catalog)
    served = [a for a in backend.get("approaches", []) if a in built] if backend["kind"] != LOCAL else []
    before = {a: store_keys(approaches_mod.get(a).store_dir(catalog)) for a in served}
    stale = tuple(a for a in built if not is_current(catalog, a, None))
    for name in stale:  # only rows dropped (a removal): rewritten from the store itself, no model
        if restrict_store(catalog, name) is not None:
            log(f"{name}: kept {len(catalog.ok)} rows, embedded none")
    stale = tuple(a for a in stale if not is_current(catalog, a, None))
    done = []
    for name in built:
        if name not in stale:
            log(f"{name}: store up to date")
            ensure_ann(catalog, name, "keep", log)
            done.append(name)
    if stale:
        settings = {name: approaches_mod.get(name).settings_from_manifest(catalog) for name in stale}
        options = BuildOptions(approaches=stale, settings={k: v for k, v in settings.items() if v is not None},
                               learn=False, ann="keep")
        from imgsim.approaches.features import extractors_shared

        with extractors_shared():  # tuned projects with the extractor pretrained embeds with
            done += [a for a in build_approaches(catalog, options, progress=progress, log=log) if a not in done]
    if served:
        stores = {a: Store.load(approaches_mod.get(a).store_dir(catalog), catalog) for a in served}
        publish(catalog, backend["uri"], stores, log, before=before)
    return [a for a in built if a in done]


@locks_catalog("catalog")
def export(catalog: Catalog, uri: str, *, log: Callable[[str], None] = lambda message: None) -> list[str]:
    """Puts every store of the catalogue into a vector backend and makes the engine use it.

    ``uri``: ``local`` (the catalogue's own stores; the default), or a location a service in
    :data:`imgsim.index.factory.KINDS` accepts: a Milvus Lite path ending in ``.db`` (embedded), or
    ``http://host:19530`` / ``milvus://host:19530`` (a Milvus server or cluster). Each approach's
    vectors go in with the item id, category and label; the catalogue then records the backend in
    ``backend.json`` (:func:`imgsim.index.factory.publish`), and the engine and the app query it.

    Returns:
        The approaches exported.
    """
    from imgsim.index.factory import LOCAL, publish
    from imgsim.storage.stores import Store

    built = list(built_approaches(catalog))
    if uri == LOCAL:
        publish(catalog, uri, {}, log)
        log("searching the local stores")
        return built
    stores = {a: Store.load(approaches_mod.get(a).store_dir(catalog), catalog) for a in built}
    publish(catalog, uri, stores, log)
    return built


def default_demo_path() -> Path:
    """Where the demo catalogue lives: ``<data dir>/catalogs/demo``."""
    return layout.default_catalog_path("demo")
