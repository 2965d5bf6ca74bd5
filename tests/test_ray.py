"""Building on a real local Ray cluster (127.0.0.1 only): the stores a local build writes, a worker
killed mid-build retried, and plain errors for a missing package or an address nobody answers."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Ray reads this at import: its node address is then loopback, never this machine's other addresses.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from imgsim import cli  # noqa: E402
from imgsim.distributed import (  # noqa: E402
    FAULT_FILE_ENV,
    RayBuildError,
    RayConfig,
    RayConnectionError,
    RayUnavailableError,
    embedding_on_ray,
    resolve_address,
)
from imgsim.ingest.catalog import Catalog  # noqa: E402
from imgsim.storage import stores  # noqa: E402
from imgsim.storage.artifacts import read_manifest  # noqa: E402

APPROACHES = ("pretrained", "autoencoder")
TIMING_FIELDS = {"created"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A Ray head on 127.0.0.1 with two CPUs (two worker processes), ended with its process group."""
    pytest.importorskip("ray", reason="ray is not installed (requirements-dev.txt installs it)")
    port, client_port = _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("ray") / "head.log"
    env = {**os.environ, "RAY_memory_monitor_refresh_ms": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--port", str(port), "--ray-client-server-port", str(client_port),
               "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
               "--object-store-memory", "200000000"]
    with open(log_path, "w") as log:
        # Its own process group: every Ray process it starts is ended with it, and no other (`ray stop`
        # would end every Ray cluster of this user on the machine).
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text(errors="replace"):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start failed: {log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(5)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # what ignored SIGTERM (and the group's stragglers)
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(15)


# The tests that need no connection come first: the module's actor pool (``on_ray``) stays connected.


def test_ray_settings_are_checked_and_ray_workers_needs_ray(shop_dir, tmp_path, capsys):
    for bad in ({"workers": 0}, {"workers": True}, {"address": ""}, {"address": "a b"}, {"max_retries": -1}):
        with pytest.raises(ValueError, match="Received"):
            RayConfig(**bad)
    code = cli.main(["build", str(shop_dir), "--out", str(tmp_path / "shop"), "--ray-workers", "2"])
    assert code == 2 and "`--ray-workers` needs `--ray`" in capsys.readouterr().err


def test_a_build_without_ray_never_imports_it():
    probe = ("import json, sys, imgsim.build, imgsim.cli; "
             "print(json.dumps(['imgsim.distributed' in sys.modules, 'ray' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert json.loads(out) == [False, False]


def test_without_the_ray_package_the_error_says_how_to_install_it(shop_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    with pytest.raises(RayUnavailableError, match="needs the ray package"):
        with embedding_on_ray(RayConfig("auto")):
            pass
    code = cli.main(["build", str(shop_dir), "--out", str(tmp_path / "shop"), "--ray", "auto"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'imgsim[ray]'" in err


def test_an_address_nobody_answers_is_one_line_with_a_hint(shop_dir, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (requirements-dev.txt installs it)")
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(RayConnectionError, match=f"no Ray cluster answers at {address}"):
        with embedding_on_ray(RayConfig(address)):
            pass
    code = cli.main(["build", str(shop_dir), "--out", str(tmp_path / "shop"), "--ray", address])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"no Ray cluster answers at {address}" in err and "ray start --head" in err
    assert not (tmp_path / "shop").exists()  # refused before anything was ingested


@pytest.fixture(scope="module")
def on_ray(cluster, tmp_path_factory: pytest.TempPathFactory):
    """One pool of two actors for the module's builds (each loads a model once, as in one build).

    The workers get the fault variable with the job: a test that writes the file kills one.
    Yields what the pool logged and the fault file's path.
    """
    fault = tmp_path_factory.mktemp("fault") / "kill-one-worker"
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(FAULT_FILE_ENV, str(fault))
        with embedding_on_ray(RayConfig(cluster, workers=2), log=lines.append) as embedder:
            assert embedder.workers == 2
            yield lines, fault


def _unbuilt_copy(built_catalog: Path, dest: Path) -> Path:
    """The built catalogue without its stores: its models (the trained autoencoder) and items kept."""
    shutil.copytree(built_catalog, dest)
    shutil.rmtree(dest / "stores")
    return dest


def _build_on_ray(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Builds the stores of the catalogue at ``root`` (within ``on_ray``); nothing may be embedded here."""
    from imgsim.build import BuildOptions, build_approaches

    def no_local(*args, **kwargs):
        raise AssertionError("a Ray build embedded on the driver")

    monkeypatch.setattr(stores, "embed_chunks", no_local)
    lines: list[str] = []
    # learn=False: the autoencoder the local build trained embeds here too (training stays local).
    build_approaches(Catalog.load(root), BuildOptions(approaches=APPROACHES, learn=False), log=lines.append)
    assert "pretrained: indexed 12 items with efficientnet_lite0" in lines, lines  # embedded, not reused
    return lines


def _assert_same_stores(ray_root: Path, local_root: Path) -> None:
    for approach in APPROACHES:
        mine, theirs = ray_root / "stores" / approach, local_root / "stores" / approach
        np.testing.assert_array_equal(np.load(mine / "ids.npy"), np.load(theirs / "ids.npy"))
        np.testing.assert_array_equal(np.load(mine / "keys.npy"), np.load(theirs / "keys.npy"))
        np.testing.assert_allclose(np.load(mine / "embeddings.npy"), np.load(theirs / "embeddings.npy"),
                                   atol=1e-5, rtol=0)
        m, t = read_manifest(mine), read_manifest(theirs)
        assert {k: v for k, v in m.items() if k not in TIMING_FIELDS} == \
            {k: v for k, v in t.items() if k not in TIMING_FIELDS}, approach


def test_a_ray_build_writes_the_stores_a_local_build_writes(on_ray, built_catalog, tmp_path, monkeypatch):
    root = _unbuilt_copy(built_catalog, tmp_path / "shop")
    _build_on_ray(root, monkeypatch)
    assert any("embedding on the Ray cluster" in line for line in on_ray[0]), on_ray[0]
    _assert_same_stores(root, built_catalog)
    catalog = Catalog.load(root)
    broken = catalog.items[catalog.items["source"].str.endswith("broken.jpg")]
    assert broken["status"].tolist() == ["failed_to_decode"]  # dropped at ingest, as locally
    ids = np.load(root / "stores" / "pretrained" / "ids.npy").tolist()
    assert broken["id"].iloc[0] not in ids and len(ids) == len(catalog.ok) == 12


def test_a_worker_killed_mid_build_is_retried_and_the_store_is_complete(on_ray, built_catalog, tmp_path,
                                                                        monkeypatch):
    root = _unbuilt_copy(built_catalog, tmp_path / "shop")
    fault = on_ray[1]
    fault.write_text("the first worker to find this file removes it and exits mid-batch")
    # Batches of 4 rows: the 12 items are 3 batches per store, so the kill lands mid-build.
    monkeypatch.setattr(stores, "build_store", _with_batch_size(stores.build_store, 4))
    _build_on_ray(root, monkeypatch)
    assert not fault.exists()  # a worker did die
    _assert_same_stores(root, built_catalog)


def _with_batch_size(build_store, batch_size: int):
    def smaller(*args, **kwargs):
        return build_store(*args, **{**kwargs, "batch_size": batch_size})

    return smaller


def test_auto_finds_the_cluster_ray_start_started_here(cluster):
    import ray

    assert resolve_address(ray, "auto") == cluster  # what `ray start --head` recorded, checked to answer


def test_more_workers_than_the_cluster_has_cpus_is_refused(cluster):
    with pytest.raises(RayBuildError, match="has 2 CPUs, fewer than the 3 workers"):
        with embedding_on_ray(RayConfig(cluster, workers=3)):
            pass
