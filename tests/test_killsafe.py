"""Kill-safety: a kill at every rename of add, remove, refresh and export loses no store.

Each case runs an operation with ``os.rename``/``os.replace`` "killing" the process on their Nth
call: from that moment nothing more reaches the disk (no rename, delete or clean-up handler), as
after ``kill -9``. Then ``refresh`` runs, and every approach's store must be present, current and
hold, row for row, the vectors an uninterrupted run gives.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import solid
from PIL import Image

from imgsim.errors import ImgsimError
from imgsim.ingest.catalog import Catalog
from imgsim.ingest.changes import add_items, remove_items
from imgsim.storage.stores import Store

SWAP_OPS = ("rename", "replace")
DISK_OPS = ("unlink", "remove", "rmdir", "symlink", "link", "mkdir")


class Killed(BaseException):
    """The simulated ``kill -9``: not an Exception, so no ``except Exception`` handler sees it."""


def run_killed(operation, n: int | None) -> int:
    """Runs ``operation()`` with the ``n``-th rename killing it; returns how many renames it made.

    After the kill every rename, delete and ``shutil.rmtree`` is a no-op that raises ``Killed``
    again or does nothing, so clean-up handlers leave the disk as a real kill would.
    """
    real = {name: getattr(os, name) for name in SWAP_OPS + DISK_OPS}
    real_rmtree = shutil.rmtree
    state = {"renames": 0, "dead": False}

    def swap_op(name):
        def call(*args, **kwargs):
            if state["dead"]:
                raise Killed
            state["renames"] += 1
            if state["renames"] == n:
                state["dead"] = True
                raise Killed
            return real[name](*args, **kwargs)
        return call

    def disk_op(name):
        def call(*args, **kwargs):
            if state["dead"]:
                return None
            return real[name](*args, **kwargs)
        return call

    def rmtree(*args, **kwargs):
        return None if state["dead"] else real_rmtree(*args, **kwargs)

    for name in SWAP_OPS:
        setattr(os, name, swap_op(name))
    for name in DISK_OPS:
        setattr(os, name, disk_op(name))
    shutil.rmtree = rmtree
    try:
        operation()
    except Killed:
        assert n is not None
    finally:
        for name, function in real.items():
            setattr(os, name, function)
        shutil.rmtree = real_rmtree
    return state["renames"]


@pytest.fixture(scope="module")
def every_approach(tmp_path_factory, shop_dir) -> Path:
    """The tiny shop built with every approach (tiny autoencoder, one epoch)."""
    from imgsim.approaches.autoencoder import AutoencoderConfig
    from imgsim.build import BuildOptions, build

    out = tmp_path_factory.mktemp("killsafe") / "shop"
    build(str(shop_dir), out, BuildOptions(settings={"autoencoder": AutoencoderConfig(image_size=16, latent_dim=8, epochs=1)}))
    assert sorted(p.name for p in (out / "stores").iterdir() if not p.name.startswith(".")) == \
        ["autoencoder", "pretrained", "tuned"]
    return out


@pytest.fixture(scope="module")
def new_images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("new")
    paths = []
    for i, colour in enumerate([(230, 210, 20), (20, 200, 210)]):
        path = folder / f"extra_{i}.png"
        Image.fromarray(solid(colour, 40)).save(path)
        paths.append(str(path))
    return paths


def copy_of(root: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(root, dest, symlinks=True)
    return dest


def refresh_all(root: Path) -> None:
    from imgsim.build import refresh

    refresh(Catalog.load(root))


def vectors(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{approach: {item id: vector}}`` of every store, each checked current and row-aligned."""
    catalog = Catalog.load(root)
    found = {}
    for approach in ("pretrained", "autoencoder", "tuned"):
        store = Store.load(root / "stores" / approach, catalog)
        assert store.ids.tolist() == catalog.ok["id"].tolist()
        found[approach] = dict(zip(store.ids.tolist(), np.asarray(store.embeddings)))
    return found


def assert_clean(root: Path) -> None:
    """No half-done swap is left: no temporary, aside or stray entry, one version per artifact."""
    for folder in ("stores", "models"):
        names = [p.name for p in (root / folder).iterdir()]
        assert not [n for n in names if "@tmp-" in n or "@link-" in n or ".old-" in n or ".tmp-" in n], names
        versions = [n.split("@v")[0] for n in names if "@v" in n]
        assert len(versions) == len(set(versions)), names


def operations(new_images):
    return {
        "add": lambda root: (add_items(root, new_images), refresh_all(root)),
        "remove": lambda root: (remove_items(root, Catalog.load(root).ok["id"].iloc[:2].tolist()),
                                refresh_all(root)),
        "refresh": lambda root: refresh_all(root),
        "export": lambda root: __import__("imgsim.build").build.export(Catalog.load(root), "local"),
    }


def start_state(every_approach, tmp_path, op, new_images) -> Path:
    """A fresh copy of the catalogue; for ``refresh``, one whose items changed but stores did not."""
    root = copy_of(every_approach, tmp_path, "base")
    if op == "refresh":
        add_items(root, new_images)
    return root


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("op", ["add", "remove", "refresh", "export"])
def test_a_kill_at_every_rename_loses_no_store(every_approach, new_images, tmp_path, op):
    operation = operations(new_images)[op]
    base = start_state(every_approach, tmp_path, op, new_images)
    reference_root = copy_of(base, tmp_path, "reference")
    total = run_killed(lambda: operation(reference_root), None)
    after = vectors(reference_root)
    before = vectors(base) if op != "refresh" else after  # a refresh starts after the commit
    assert op == "export" or total > 5  # every store swap, manifest and items table is renamed in
    print(f"{op}: {total} renames, a kill at each in turn")
    for n in range(1, total + 1):
        root = copy_of(base, tmp_path, f"killed-{n}")
        run_killed(lambda root=root: operation(root), n)
        refresh_all(root)
        got = vectors(root)
        ids = set(Catalog.load(root).ok["id"])
        expected = after if ids == set(after["pretrained"]) else before  # killed after or before the commit
        assert ids == set(expected["pretrained"]), f"kill {n}/{total}: a catalogue between the two"
        for approach, rows in expected.items():
            assert set(got[approach]) == ids, f"kill {n}/{total}: {approach}"
            for item, vector in rows.items():
                np.testing.assert_allclose(got[approach][item], vector, rtol=1e-5, atol=1e-6,
                                           err_msg=f"kill {n}/{total}: {approach} row {item}")
        assert_clean(root)
        shutil.rmtree(root)


@pytest.mark.slow
def test_an_old_layout_store_is_migrated_and_survives_a_kill_in_the_migration(every_approach, tmp_path):
    """A store that is a real directory (written before versioned swaps) is swapped safely."""
    base = copy_of(every_approach, tmp_path, "legacy")
    for approach in ("pretrained", "autoencoder", "tuned"):
        link = base / "stores" / approach
        target = link.resolve()
        link.unlink()
        shutil.copytree(target, link)
        shutil.rmtree(target)
    remove_items(base, Catalog.load(base).ok["id"].iloc[:1].tolist())
    total = run_killed(lambda: refresh_all(copy_of(base, tmp_path, "legacy-all")), None)
    for n in range(1, total + 1):  # each store's migration: old aside, new version in, link placed
        root = copy_of(base, tmp_path, f"legacy-{n}")
        run_killed(lambda root=root: refresh_all(root), n)
        refresh_all(root)
        assert len(vectors(root)["pretrained"]) == len(Catalog.load(base).ok)
        assert all((root / "stores" / a).is_symlink() for a in ("pretrained", "autoencoder", "tuned"))
        assert_clean(root)
        shutil.rmtree(root)


# -- one writer at a time ---------------------------------------------------------------------------

def test_add_and_remove_at_once_both_end_and_lose_nothing(every_approach, new_images, tmp_path):
    import subprocess
    import sys
    import time

    from imgsim.engine import Engine
    from imgsim.storage.lock import writer_lock

    root = copy_of(every_approach, tmp_path, "busy")
    gone = Catalog.load(root).ok["id"].iloc[:2].tolist()
    env = {**os.environ, "IMGSIM_LOCK_WAIT": "600"}
    commands = {"add": ["add", str(root), *new_images], "remove": ["remove", str(root), *gone]}
    children = {}
    with writer_lock(root):  # both start while a third writer holds the catalogue
        for name, argv in commands.items():
            flag = tmp_path / f"{name}.ready"
            code = f"import sys, imgsim.cli; open({str(flag)!r}, 'w').close(); sys.exit(imgsim.cli.main({argv!r}))"
            children[name] = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True)
        while not all((tmp_path / f"{name}.ready").exists() for name in commands):
            assert all(child.poll() is None for child in children.values())
            time.sleep(0.2)
        time.sleep(0.5)
        engine = Engine.open(root)  # a reader keeps answering while the writers wait
        assert len(engine.search_item(0, "pretrained", k=3).ids) == 3
    results = {name: child.communicate(timeout=600) for name, child in children.items()}
    for name, child in children.items():
        assert child.returncode == 0, (name, results[name][1][-2000:])
    assert "2 added" in results["add"][0] and "2 removed" in results["remove"][0]
    ok = Catalog.load(root).ok
    ids = set(ok["id"])
    assert {Path(p).stem for p in new_images} <= set(ok["name"]) and not set(gone) & ids
    assert all(set(rows) == ids for rows in vectors(root).values())
    assert not (root / ".writer.lock").exists()


def test_a_second_writer_is_told_busy_in_one_line(tmp_path):
    import subprocess
    import sys

    from imgsim.storage.lock import writer_lock

    code = ("import sys\nfrom imgsim.storage.lock import writer_lock, CatalogBusyError\n"
            f"try:\n    with writer_lock({str(tmp_path)!r}, wait=0.3): pass\n"
            "except CatalogBusyError as err:\n    print(err); sys.exit(3)\n")
    with writer_lock(tmp_path):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"catalogue {tmp_path.name} is busy: another change is running (pid {os.getpid()})"
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr  # released: the next writer goes ahead


def test_a_lock_left_by_a_killed_writer_is_taken_over(every_approach, tmp_path):
    import json
    import socket
    import subprocess
    import sys

    root = copy_of(every_approach, tmp_path, "stale")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (root / ".writer.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    catalog, removed = remove_items(root, Catalog.load(root).ok["id"].iloc[:1].tolist())
    assert removed == 1 and not (root / ".writer.lock").exists()


# -- a full disk ------------------------------------------------------------------------------------

def no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def assert_one_line_no_space(info) -> None:
    assert "\n" not in str(info.value) and str(info.value).startswith("no space left on device while writing")


def test_an_add_on_a_full_disk_fails_and_keeps_the_catalogue(every_approach, new_images, tmp_path, monkeypatch,
                                                             capsys):
    """The disk fills up under the commit (the error comes at fsync, as on a delayed-allocation filesystem)."""
    from imgsim.cli import main

    root = copy_of(every_approach, tmp_path, "full")
    before = vectors(root)
    items = Catalog.load(root).items
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ImgsimError) as info:
        add_items(root, new_images)
    assert_one_line_no_space(info)
    assert main(["add", str(root), *new_images]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if "error" in line]  # the rest are progress bars
    assert "added" not in out and errors == [err.strip().splitlines()[-1]]
    assert errors[0].startswith("imgsim add: error: no space left on device while writing")
    monkeypatch.undo()
    assert Catalog.load(root).items.equals(items)
    assert {a: set(rows) for a, rows in vectors(root).items()} == {a: set(rows) for a, rows in before.items()}


def test_a_rebuild_on_a_full_disk_fails_at_its_commit_and_keeps_the_catalogue(every_approach, shop_dir, tmp_path,
                                                                              monkeypatch):
    from imgsim.build import build

    root = copy_of(every_approach, tmp_path, "full")
    source = tmp_path / "source"
    shutil.copytree(shop_dir, source)
    Image.fromarray(solid((120, 40, 200), 40)).save(source / "reds" / "violet.png")
    items = Catalog.load(root).items
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "manifest.json" and Path(dst).parent == root:
            no_space()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(ImgsimError) as info:
        build(str(source), root)
    assert_one_line_no_space(info)
    monkeypatch.undo()
    assert Catalog.load(root).items.equals(items)
    assert all(set(rows) == set(items[items["status"] == "ok"]["id"]) for rows in vectors(root).values())


def test_an_autoencoder_checkpoint_on_a_full_disk_fails_in_one_line_and_keeps_the_model(every_approach, tmp_path,
                                                                                       monkeypatch):
    from imgsim.approaches.autoencoder import AutoencoderConfig
    from imgsim.build import BuildOptions, retrain
    from imgsim.storage.artifacts import read_manifest

    root = copy_of(every_approach, tmp_path, "full")
    model = read_manifest(root / "models" / "autoencoder")
    monkeypatch.setattr(np, "savez", no_space)
    with pytest.raises(ImgsimError) as info:
        retrain(Catalog.load(root), "autoencoder",
                BuildOptions(settings={"autoencoder": AutoencoderConfig(image_size=16, latent_dim=8, epochs=1, seed=7)}))
    assert_one_line_no_space(info)
    monkeypatch.undo()
    assert read_manifest(root / "models" / "autoencoder") == model
    assert set(vectors(root)["autoencoder"]) == set(Catalog.load(root).ok["id"])
