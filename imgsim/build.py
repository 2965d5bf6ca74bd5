"""The whole build of a searchable catalogue: ingest, then each approach; redoing only what is stale.

Building is the only step that writes artifacts (catalogue, models, stores); the engine only
reads them. Each approach builds itself (see :mod:`imgsim.approaches`); this module decides
which ones run and in what order.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from imgsim import approaches as approaches_mod
from imgsim.approaches import AUTOENCODER, TUNED, NotApplicableError, load_squares
from imgsim.approaches.autoencoder import AutoencoderConfig
from imgsim.approaches.features import DEFAULT_EXTRACTOR, ExtractorOptions
from imgsim.ingest import catalog as catalog_mod
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.download import DownloadConfig
from imgsim.progress import Progress, silent
from imgsim.storage.lock import locks_catalog

ProgressFactory = Callable[[str], Progress]
ANN_POLICIES = ("auto", "always", "never")
__all__ = ["BuildOptions", "build", "build_approaches", "default_demo_path", "export", "load_squares", "refresh", "retrain"]


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What ``build`` makes.

    Attributes:
        approaches: Names from :data:`imgsim.approaches.APPROACHES`; ``None`` (the default) means
            every approach that applies to the catalogue (``tuned`` is skipped, with a message,
            when nothing repeats to tune on). Dependencies are added (``tuned`` needs
            ``pretrained``).
        extractor: The pretrained extractor's name.
        extractor_options: Pooling and flip options of the pretrained extractor.
        autoencoder: Architecture and training settings of the autoencoder; ``None`` keeps the
            trained model whatever its settings and never trains (used after adding items).
        labels: Labels CSV for folder sources.
        label_column: Column copied into ``label`` (and fitted on by ``tuned``).
        download: Download settings for CSV sources.
        ann: ``auto`` gives a store an approximate (HNSW) index beside its exact matrix once it
            has :attr:`imgsim.index.hnsw.AnnConfig.min_rows` rows; ``always`` and ``never`` force it.
    """

    approaches: tuple[str, ...] | None = None
    extractor: str = DEFAULT_EXTRACTOR
    extractor_options: ExtractorOptions = ExtractorOptions()
    autoencoder: AutoencoderConfig | None = AutoencoderConfig()
    labels: str | None = None
    label_column: str | None = None
    download: DownloadConfig = DownloadConfig()
    ann: str = "auto"

    def __post_init__(self) -> None:
        if self.ann not in ANN_POLICIES:
            raise ValueError(f"`ann` must be one of {', '.join(ANN_POLICIES)}. Received: ann={self.ann!r}")
        if self.approaches is not None:
            unknown = set(self.approaches) - set(approaches_mod.APPROACHES)
            if unknown or not self.approaches:
                raise ValueError(
                    f"`approaches` must be a non-empty subset of {', '.join(approaches_mod.APPROACHES)}. "
                    f"Received: {','.join(self.approaches)}"
                )


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
            approaches_mod.get(name).build(catalog, options, log=log, progress=progress)
        except NotApplicableError as err:
            if explicit:
                raise
            log(f"{name}: skipped: {err}")
            continue
        ensure_ann(catalog, name, options.ann, log)
        done.append(name)
    return done


def ann_path(catalog: Catalog, approach: str) -> Path:
    """Where a store's approximate index lives: ``CATALOG/stores/<approach>.ann``."""
    return approaches_mod.get(approach).store_dir(catalog).with_name(f"{approach}.ann")


def ensure_ann(catalog: Catalog, approach: str, policy: str = "auto",
               log: Callable[[str], None] = lambda message: None) -> None:
    """Builds (or drops) the approximate index of ``approach``'s store as ``policy`` says.

    An index that still matches the store's embeddings is kept; one built for other embeddings
    (the catalogue changed) is rebuilt.
    """
    import numpy as np

    from imgsim.index.hnsw import AnnConfig, AnnIndex, should_use_ann
    from imgsim.storage.artifacts import ArtifactError, remove_artifact
    from imgsim.storage.stores import Store

    path = ann_path(catalog, approach)
    store = Store.load(approaches_mod.get(approach).store_dir(catalog), catalog)
    wanted = policy == "always" or (policy == "auto" and should_use_ann(len(store.embeddings)))
    if not wanted:
        remove_artifact(path)
        return
    try:
        AnnIndex.load(path, store.embeddings)
        log(f"{approach}: approximate index up to date")
        return
    except ArtifactError:
        pass
    import time

    started = time.perf_counter()
    # A filter keeping up to 20k rows is answered exactly over them: through the graph a 17.7%
    # filter recalled only 0.77-0.82 (benchmarks/search.py --ann), and 20k exact rows cost ~5 ms.
    config = AnnConfig(exact_below=20_000)
    index = AnnIndex.build(np.asarray(store.embeddings), store.manifest.get("metric", "cosine"), config)
    index.save(path)
    log(f"{approach}: approximate (HNSW) index over {index.size} rows in {time.perf_counter() - started:.1f} s")


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
        download_config=options.download, progress=progress("ingest"),
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
    this is the on-demand step: the autoencoder is trained again, the tuned projection refitted.

    Raises:
        ValueError: ``approach`` learns nothing (``pretrained``).
    """
    if approach == AUTOENCODER:
        autoencoder = approaches_mod.APPROACHES[AUTOENCODER]
        model = autoencoder.train(catalog, options.autoencoder, log=log, progress=progress)
        approaches_mod.ensure_store(AUTOENCODER, catalog, model, log, progress(AUTOENCODER))
    elif approach == TUNED:
        approaches_mod.APPROACHES[TUNED].refit(catalog, options, log=log)
    else:
        raise ValueError(f"`approach` must be one that learns ({AUTOENCODER} or {TUNED}). Received: {approach!r}")


@locks_catalog("catalog")
def refresh(catalog: Catalog, *, progress: ProgressFactory = lambda stage: silent,
            log: Callable[[str], None] = lambda message: None) -> list[str]:
    """Brings every store the catalogue has up to date with its items, after an add or remove.

    Each approach keeps the model it was built with: the pretrained extractor and its options as
    its store records them, the autoencoder as trained, the tuned projection as fitted. Only new
    and changed items are embedded; nothing is retrained (see :func:`retrain`).

    Returns:
        The approaches brought up to date.
    """
    from imgsim.storage.artifacts import read_manifest

    catalog = Catalog.load(catalog.root)  # as committed now: another writer may have changed it
    built = tuple(a for a in approaches_mod.names() if approaches_mod.get(a).store_dir(catalog).is_dir())
    if not built:
        return []
    extractor, extractor_options = DEFAULT_EXTRACTOR, ExtractorOptions()
    store_dir = approaches_mod.get(approaches_mod.PRETRAINED).store_dir(catalog)
    if store_dir.is_dir():
        manifest = read_manifest(store_dir)
        extractor, extractor_options = manifest["model"], ExtractorOptions(**manifest["options"])
    label_column = None
    tuned_model = approaches_mod.get(TUNED).model_dir(catalog)
    if (tuned_model / "manifest.json").is_file():
        label_column = read_manifest(tuned_model).get("label_column")
    settings = BuildOptions(approaches=built, extractor=extractor, extractor_options=extractor_options,
                            autoencoder=None, label_column=label_column)
    done = build_approaches(catalog, settings, progress=progress, log=log)
    from imgsim.engine import read_backend

    backend = read_backend(catalog)
    if backend["kind"] == "milvus":  # keep Milvus in step (a new collection, swapped in atomically)
        export(catalog, backend["uri"], log=log)
    return done


@locks_catalog("catalog")
def export(catalog: Catalog, uri: str, *, log: Callable[[str], None] = lambda message: None) -> list[str]:
    """Puts every store of the catalogue into a vector backend and makes the engine use it.

    ``uri``: ``local`` (the catalogue's own stores; the default), a Milvus Lite path ending in
    ``.db`` (embedded), or ``http://host:19530`` / ``milvus://host:19530`` (a Milvus server or
    cluster). Each approach's vectors go in with the item id, category and label; the catalogue
    then records the backend in ``backend.json``, and the engine and the app query it.

    Returns:
        The approaches exported.
    """
    from imgsim.engine import BACKEND_FILE
    from imgsim.storage.artifacts import write_json_atomic
    from imgsim.storage.stores import Store

    built = [a for a in approaches_mod.names() if approaches_mod.get(a).store_dir(catalog).is_dir()]
    if uri == "local":
        (catalog.root / BACKEND_FILE).unlink(missing_ok=True)
        log("searching the local stores")
        return built
    from imgsim.index.milvus import MilvusBackend

    with MilvusBackend(uri) as backend:
        for approach in built:
            store = Store.load(approaches_mod.get(approach).store_dir(catalog), catalog)
            rows = backend.export_store(catalog, store, approach)
            log(f"{approach}: {rows} rows exported to {backend.uri}")
    write_json_atomic(catalog.root / BACKEND_FILE, {"kind": "milvus", "uri": uri, "approaches": built})
    return built


def default_demo_path() -> Path:
    """Where the demo catalogue lives: ``<data dir>/catalogs/demo``."""
    return catalog_mod.default_catalog_path("demo")
