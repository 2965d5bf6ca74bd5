"""A catalogue that changes: add and remove items without rebuilding or retraining."""

import json
import shutil

import numpy as np
import pytest
from conftest import solid
from PIL import Image

from imgsim.cli import main
from imgsim.engine import Engine
from imgsim.ingest.catalog import Catalog


@pytest.fixture
def shop(built_catalog, tmp_path):
    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root)
    return root


def manifest(root, approach):
    return json.loads((root / "stores" / approach / "manifest.json").read_text())


def test_add_embeds_only_new_items_and_keeps_the_models(shop, tmp_path, capsys):
    before = Engine.open(shop)
    n = len(before.items)
    model_before = json.loads((shop / "models" / "autoencoder" / "manifest.json").read_text())
    new = tmp_path / "new"
    (new / "yellows").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(solid((230, 210, 20), 40)).save(new / "yellows" / f"yellow_{i}.png")
    assert main(["add", str(shop), str(new)]) == 0
    out = capsys.readouterr().out
    assert "3 added, 0 updated" in out
    for approach in ("pretrained", "autoencoder"):
        assert manifest(shop, approach)["count"] == n + 3
        assert manifest(shop, approach)["reused_rows"] == n  # only the three new items were embedded
    model_after = json.loads((shop / "models" / "autoencoder" / "manifest.json").read_text())
    assert model_after["fingerprint"] == model_before["fingerprint"]  # not retrained
    engine = Engine.open(shop)
    top = engine.search(new / "yellows" / "yellow_1.png", "pretrained", k=3)
    assert set(top.items["category"]) == {"yellows"}
    assert main(["info", str(shop)]) == 0
    assert "3 of 15 items added since it was trained" in capsys.readouterr().out


def test_remove_drops_rows_without_embedding(shop, capsys):
    engine = Engine.open(shop)
    gone = engine.items["id"].iloc[:2].tolist()
    vectors = np.array(engine.store("pretrained").embeddings)
    assert main(["remove", str(shop), *gone]) == 0
    assert "2 removed" in capsys.readouterr().out
    after = Engine.open(shop)
    assert len(after.items) == len(engine.items) - 2 and not set(gone) & set(after.items["id"])
    assert manifest(shop, "pretrained")["reused_rows"] == len(after.items)
    np.testing.assert_array_equal(np.asarray(after.store("pretrained").embeddings), vectors[2:])
    assert main(["remove", str(shop), "no-such-id"]) == 2
    assert "no item" in capsys.readouterr().err


def test_an_interrupted_update_is_finished_by_refresh(shop, tmp_path, monkeypatch, capsys):
    """A kill after the catalogue commit but before the stores: the catalogue loads, refresh ends it."""
    import imgsim.build
    import imgsim.storage.stores

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imgsim.build, "build_approaches", killed)
    monkeypatch.setattr(imgsim.storage.stores, "restrict_store", killed)  # what a removal's refresh writes with
    gone = Engine.open(shop).items["id"].iloc[:1].tolist()
    assert main(["remove", str(shop), *gone]) == 130
    monkeypatch.undo()
    engine = Engine.open(shop)
    assert "pretrained" in engine.unavailable()  # stale, and says so, rather than wrong
    assert main(["refresh", str(shop)]) == 0
    assert Engine.open(shop).approaches() == ["pretrained", "autoencoder"]
    assert len(Catalog.load(shop).ok) == 11


def test_an_approximate_index_is_built_used_and_refreshed(shop, capsys):
    from imgsim.build import BuildOptions, ann_path, build_approaches, ensure_ann
    from imgsim.index.exact import Index
    from imgsim.index.hnsw import AnnConfig, AnnIndex

    catalog = Catalog.load(shop)
    build_approaches(catalog, BuildOptions(approaches=("pretrained",), ann="always"))
    assert (shop / "stores" / "pretrained.ann" / "manifest.json").is_file()
    engine = Engine.open(shop)
    assert engine.search_backend("pretrained") == "approximate (HNSW)"
    embeddings = np.asarray(engine.store("pretrained").embeddings)
    oracle = Index(embeddings)
    for row in range(3):
        want = oracle.search(embeddings[row], 5, exclude=[row])
        assert engine.search_item(row, k=5).items["row"].tolist() == want.rows[0].tolist()
    # a graph built for other embeddings (stale: the catalogue changed since) is passed over
    AnnIndex.build(embeddings[::-1].copy(), "cosine", AnnConfig(threads=1)).save(ann_path(catalog, "pretrained"))
    stale = Engine.open(shop)
    assert stale.search_backend("pretrained") == "exact"
    want = oracle.search(embeddings[0], 5, exclude=[0]).rows[0].tolist()
    assert stale.search_item(0, k=5).items["row"].tolist() == want
    # a removal refreshes the stores and keeps the graph: this one matched nothing of the store
    # (reversed rows), so following it would leave half its nodes tombstones: it is compacted
    assert main(["remove", str(shop), engine.items["id"].iloc[0]]) == 0
    assert "compacting" in capsys.readouterr().out
    assert Engine.open(shop).search_backend("pretrained") == "approximate (HNSW)"
    ensure_ann(Catalog.load(shop), "pretrained", "never")
    assert not (shop / "stores" / "pretrained.ann").exists()


def test_big_stores_get_an_ivfpq_index_updated_in_place(shop, tmp_path, capsys, monkeypatch):
    import imgsim.build
    from imgsim.build import BuildOptions, build_approaches

    # Every store counts as big here; 3-bit codes train on the shop's 12 rows, and float16 re-rank
    # vectors take an added row as it is (sq8 clamps it to the ranges seen in training: 12 rows).
    monkeypatch.setattr(imgsim.build, "IVFPQ_MIN_ROWS", 0)
    monkeypatch.setattr(imgsim.build, "IVFPQ_SETTINGS", {"nbits": 3, "rerank_dtype": "float16", "threads": 1})
    build_approaches(Catalog.load(shop), BuildOptions(approaches=("pretrained",), ann="always"))
    path = shop / "stores" / "pretrained.ivfpq"
    built = json.loads((path / "manifest.json").read_text())
    assert not (shop / "stores" / "pretrained.ann").exists()
    engine = Engine.open(shop)
    assert engine.search_backend("pretrained") == "approximate (IVF-PQ, re-ranked)"
    new = tmp_path / "new"
    (new / "yellows").mkdir(parents=True)
    Image.fromarray(solid((230, 210, 20), 40)).save(new / "yellows" / "yellow_0.png")
    assert main(["add", str(shop), str(new)]) == 0
    assert "updated in place (1 rows added, 0 removed)" in capsys.readouterr().out
    added = json.loads((path / "manifest.json").read_text())
    assert added["build_id"] == built["build_id"] and added["nodes"] == built["nodes"] + 1
    engine = Engine.open(shop)
    assert engine.search_backend("pretrained") == "approximate (IVF-PQ, re-ranked)"
    top = engine.search(new / "yellows" / "yellow_0.png", "pretrained", k=1)
    assert top.items["id"].tolist() == [engine.items["id"].iloc[-1]]
    yellow = engine.items["id"].iloc[-1]
    assert main(["remove", str(shop), yellow]) == 0
    removed = json.loads((path / "manifest.json").read_text())
    assert removed["build_id"] == built["build_id"] and removed["count"] == built["count"]
    engine = Engine.open(shop)
    assert engine.search_backend("pretrained") == "approximate (IVF-PQ, re-ranked)"
    ids = engine.search(new / "yellows" / "yellow_0.png", "pretrained", k=len(engine.items)).ids
    assert yellow not in ids and len(ids) == len(engine.items)


def ann_manifest(root):
    return json.loads((root / "stores" / "pretrained.ann" / "manifest.json").read_text())


def test_add_and_remove_update_the_graph_in_place(shop, tmp_path, capsys):
    from imgsim.build import BuildOptions, build_approaches
    from imgsim.index.exact import Index

    build_approaches(Catalog.load(shop), BuildOptions(approaches=("pretrained",), ann="always"))
    built = ann_manifest(shop)
    new = tmp_path / "new"
    (new / "yellows").mkdir(parents=True)
    Image.fromarray(solid((230, 210, 20), 40)).save(new / "yellows" / "yellow_0.png")
    assert main(["add", str(shop), str(new)]) == 0
    assert "updated in place (1 rows added, 0 removed)" in capsys.readouterr().out
    added = ann_manifest(shop)
    # the same graph, one node appended: not rebuilt
    assert added["build_id"] == built["build_id"] and added["nodes"] == built["nodes"] + 1
    engine = Engine.open(shop)
    assert engine.search_backend("pretrained") == "approximate (HNSW)"
    top = engine.search(new / "yellows" / "yellow_0.png", "pretrained", k=1)
    assert top.items["id"].tolist() == [engine.items["id"].iloc[-1]]
    gone = engine.items["id"].iloc[1]
    assert main(["remove", str(shop), gone]) == 0
    removed = ann_manifest(shop)
    assert removed["build_id"] == built["build_id"] and removed["nodes"] == added["nodes"]
    assert removed["count"] == added["count"] - 1  # one tombstone
    after = Engine.open(shop)
    assert after.search_backend("pretrained") == "approximate (HNSW)"
    embeddings = np.asarray(after.store("pretrained").embeddings)
    oracle = Index(embeddings)
    for row in range(len(embeddings)):
        got = after.search_item(row, k=len(embeddings) - 1).items
        assert gone not in set(got["id"])
        assert got["row"].tolist()[:3] == oracle.search(embeddings[row], 3, exclude=[row]).rows[0].tolist()


def test_refresh_loads_the_extractor_only_when_rows_need_embedding_and_once(shop, tmp_path, monkeypatch):
    from imgsim.approaches import features
    from imgsim.build import BuildOptions, build_approaches, refresh
    from imgsim.ingest.changes import add_items, remove_items

    assert build_approaches(Catalog.load(shop), BuildOptions(approaches=("tuned",))) == ["pretrained", "tuned"]
    loads = []
    real = features.build_extractor

    def counted(*args, **kwargs):
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "build_extractor", counted)
    assert refresh(Catalog.load(shop)) == ["pretrained", "autoencoder", "tuned"]
    assert loads == []  # nothing changed: no model loaded
    photo = tmp_path / "yellow.png"
    Image.fromarray(solid((230, 210, 20), 40)).save(photo)
    add_items(shop, [str(photo)])
    refresh(Catalog.load(shop))
    assert len(loads) == 1  # embedded for pretrained, projected for tuned: one load
    n = len(Catalog.load(shop).ok)
    assert manifest(shop, "pretrained")["count"] == manifest(shop, "tuned")["count"] == n
    assert features._SHARED.get() is None  # the one-load scope ends with the refresh
    before = np.asarray(Engine.open(shop).store("tuned").embeddings)
    remove_items(shop, [Catalog.load(shop).ok["id"].iloc[0]])
    refresh(Catalog.load(shop))
    assert len(loads) == 1  # a removal embeds nothing and loads nothing
    assert manifest(shop, "pretrained")["count"] == manifest(shop, "tuned")["count"] == n - 1
    np.testing.assert_array_equal(np.asarray(Engine.open(shop).store("tuned").embeddings), before[1:])


def test_searches_answer_throughout_add_and_remove(shop, tmp_path):
    """A query loop beside add and remove: no error, and no removed item once remove returned."""
    import threading

    from imgsim.build import BuildOptions, build_approaches
    from imgsim.engine import current_version

    build_approaches(Catalog.load(shop), BuildOptions(approaches=("pretrained",), ann="always"))
    first = Engine.open(shop)
    keep, gone = first.items["id"].iloc[0], first.items["id"].iloc[1:4].tolist()
    errors, answered, after = [], [], []
    removed, stop = threading.Event(), threading.Event()

    def loop() -> None:
        engine, version = first, current_version(shop)
        while not stop.is_set():
            late = removed.is_set()  # a query started after remove returned
            try:
                now = current_version(shop)
                if now != version:  # a newer state: used once its stores are complete, as the app does
                    fresh = Engine.open(shop)
                    if "pretrained" in fresh.approaches():
                        engine, version = fresh, now
                row = int(np.flatnonzero(engine.items["id"] == keep)[0])
                ids = engine.search_item(row, "pretrained", k=len(engine.items) - 1).ids
                (after if late else answered).append(ids)
            except Exception as err:  # noqa: BLE001 - any error fails the test below
                errors.append(err)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        new = tmp_path / "new"
        (new / "yellows").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(solid((230, 210, 20 + 60 * i), 40)).save(new / "yellows" / f"yellow_{i}.png")
        assert main(["add", str(shop), str(new)]) == 0
        assert main(["remove", str(shop), *gone]) == 0
        removed.set()
        for _ in range(200):
            if len(after) >= 5 or errors:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert answered and len(after) >= 5
    assert not any(set(gone) & set(ids) for ids in after)
    assert Engine.open(shop).search_backend("pretrained") == "approximate (HNSW)"
