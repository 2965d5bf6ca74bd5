"""Milvus backend: same top-k as the exact index, filters, add/remove, embedded and server mode."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imgsim.index.exact import Index
from imgsim.index.milvus import (
    KIND,
    MilvusBackend,
    MilvusBackendError,
    catalog_collection,
    collection_name,
    filter_expression,
    hits_rows,
    quote,
    resolve_uri,
)

# Categories that would break or rewrite a naively built expression.
QUOTED = 'say "hi"'
INJECTION = 'x" or category != "'
CATEGORIES = ["shoes", "bags", QUOTED, INJECTION, "back\\slash 'single'", "Küche & Bad 台所"]
N, DIM, K = 240, 16, 8


# -- pure functions (no Milvus needed) -------------------------------------------------------------

def test_collection_names_are_valid_and_distinct():
    names = {collection_name(c, a) for c in ("my-shop", "my_shop", "mön shop", "x" * 300)
             for a in ("pretrained", "autoencoder")}
    assert len(names) == 8
    for name in names:
        assert name.replace("_", "a").isalnum() and name.isascii() and len(name) <= 200
    assert collection_name("shop", "pretrained") == collection_name("shop", "pretrained")
    with pytest.raises(ValueError, match="`catalog_name` and `approach` must be non-empty"):
        collection_name("", "pretrained")


def test_quote_escapes_everything_that_could_end_a_literal():
    assert quote(INJECTION) == '"x\\" or category != \\""'
    assert quote("a\\b\n") == '"a\\\\b\\n"'
    assert filter_expression("a", ["1", 'b"']) == '(category == "a") and (id not in ["1", "b\\""])'
    assert filter_expression() == ""
    with pytest.raises(ValueError, match="control characters"):
        quote("bad\x00")


def test_uris():
    assert resolve_uri("milvus://127.0.0.1:19530") == ("http://127.0.0.1:19530", False)
    assert resolve_uri("http://127.0.0.1:19530") == ("http://127.0.0.1:19530", False)
    path, embedded = resolve_uri("some/dir/vectors.db")
    assert embedded and Path(path).is_absolute()
    for bad in ("vectors", "ftp://host:1", ""):
        with pytest.raises(ValueError, match="`uri` must be"):
            resolve_uri(bad)


def test_hits_rows_maps_ids_and_orders_ties_by_row():
    rows, scores = hits_rows([[("c", 0.5), ("b", 0.9), ("a", 0.5), ("gone", 0.99)]], ["a", "b", "c"])
    assert rows[0].tolist() == [1, 0, 2]
    np.testing.assert_allclose(scores[0], [0.9, 0.5, 0.5])


# -- against Milvus ----------------------------------------------------------------------------------

HAVE_MILVUS = all(importlib.util.find_spec(m) is not None for m in ("pymilvus", "milvus_lite"))
needs_milvus = pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus and milvus-lite are not installed")


class Data:
    """A few hundred unit vectors with awkward categories and ids, plus queries near some rows."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        v = rng.normal(size=(N, DIM)).astype(np.float32)
        self.vectors = v / np.linalg.norm(v, axis=1, keepdims=True)
        self.ids = [f"item-{i}" for i in range(N)]
        self.ids[5] = 'it"em\'5'
        self.categories = [CATEGORIES[i % len(CATEGORIES)] for i in range(N)]
        self.labels = [f"label {i % 7}" for i in range(N)]
        picks = self.vectors[[0, 5, 17, 33, 101, 200]]
        self.queries = picks + 0.2 * rng.normal(size=picks.shape).astype(np.float32)
        self.index = Index(self.vectors)
        self.manifest = {"kind": KIND, "format_version": 1, "dim": DIM, "metric": "cosine",
                         "model": "fake", "fingerprint": "v1",
                         "index": {"type": "HNSW", "M": 16, "efConstruction": 200, "ef": 128}}


@pytest.fixture(scope="module")
def data() -> Data:
    return Data()


def assert_same_top_k(got, index: Index, queries, ids, k, mask=None, tol=1e-4):
    """Milvus's answer equals exact search, except that tied items may swap."""
    exact = index.search(queries, k, mask=mask)
    all_scores = index.scores(queries)
    where = {item: row for row, item in enumerate(ids)}
    for q, hits in enumerate(got):
        assert len(hits) == exact.rows.shape[1]
        np.testing.assert_allclose([s for _, s in hits], exact.scores[q], atol=tol)
        kth = exact.scores[q][-1]
        must = {ids[r] for r, s in zip(exact.rows[q], exact.scores[q]) if s > kth + tol}
        assert must <= {i for i, _ in hits}
        for item, score in hits:
            assert mask is None or mask[where[item]]
            assert all_scores[q, where[item]] == pytest.approx(score, abs=tol)


def run_checks(backend: MilvusBackend, name: str, data: Data) -> None:
    """Top-k, category filters (quotes included), exclusions, then upsert and delete."""
    assert backend.has(name) and backend.count(name) == N
    assert_same_top_k(backend.search(name, data.queries, K), data.index, data.queries, data.ids, K)

    cats = np.array(data.categories)
    for category in CATEGORIES:
        got = backend.search(name, data.queries, K, category=category)
        assert_same_top_k(got, data.index, data.queries, data.ids, K, mask=cats == category)
    assert backend.search(name, data.queries[:1], K, category="no such category") == [[]]

    excluded = [data.ids[5], data.ids[0], data.ids[17]]
    mask = ~np.isin(np.array(data.ids), excluded)
    got = backend.search(name, data.queries, K, exclude_ids=excluded)
    assert_same_top_k(got, data.index, data.queries, data.ids, K, mask=mask)
    got = backend.search(name, data.queries, K, category=QUOTED, exclude_ids=excluded)
    assert_same_top_k(got, data.index, data.queries, data.ids, K, mask=mask & (cats == QUOTED))

    # Add an item right on the first query, then move it away; then remove it and an original.
    new_id = "new 'one\""
    assert backend.upsert(name, [new_id], data.queries[:1], [QUOTED], ["new"]) == 1
    assert backend.count(name) == N + 1
    top = backend.search(name, data.queries[:1], 1, category=QUOTED)[0][0]
    assert top[0] == new_id and top[1] == pytest.approx(1.0, abs=1e-5)
    backend.upsert(name, [new_id], -data.queries[:1], [QUOTED], ["new"])
    assert backend.count(name) == N + 1
    assert new_id not in {i for i, _ in backend.search(name, data.queries[:1], K)[0]}
    backend.delete(name, [new_id, data.ids[0], "never there"])
    assert backend.count(name) == N - 1
    remaining = np.array([i != data.ids[0] for i in data.ids])
    got = backend.search(name, data.queries, K)
    assert_same_top_k(got, data.index, data.queries, data.ids, K, mask=remaining)
    # Put the original back so the collection is as exported.
    backend.upsert(name, [data.ids[0]], data.vectors[:1], [data.categories[0]], [data.labels[0]])
    assert backend.count(name) == N


def export(backend: MilvusBackend, name: str, data: Data) -> int:
    return backend.export_arrays(name, data.ids, data.vectors, data.categories, data.labels,
                                 manifest=data.manifest, batch_size=100)


@needs_milvus
def test_embedded_milvus_lite(tmp_path, data):
    uri = str(tmp_path / "vectors.db")
    name = collection_name("shop", "pretrained")
    with MilvusBackend(uri) as backend:
        assert not backend.has(name)
        assert export(backend, name, data) == N
        index = backend._client.describe_index(name, "vector")
        build = index.get("params", index)  # Milvus Lite nests the build parameters
        assert (index["index_type"], int(build["M"]), int(build["efConstruction"])) == ("HNSW", 16, 200)
        run_checks(backend, name, data)
        with pytest.raises(ValueError, match=r"`vectors` must have shape \(Q, 16\)"):
            backend.search(name, np.zeros((1, 3)), K)
        with pytest.raises(ValueError, match="`k` must be in"):
            backend.search(name, data.queries, 0)
        with pytest.raises(ValueError, match="`collection` must be"):
            backend.count("bad-name; drop")
    # Reopened: the collection must be loaded again before searching.
    with MilvusBackend(uri) as backend:
        assert backend.count(name) == N
        assert_same_top_k(backend.search(name, data.queries, K), data.index, data.queries, data.ids, K)
        # Released behind this backend's back (as a server restart does): loaded again.
        backend._client.release_collection(name)
        assert backend.count(name) == N
        # A re-export replaces the data behind the name and leaves one version behind.
        half = Data()
        half.ids, half.vectors = data.ids[:100], data.vectors[:100]
        half.categories, half.labels = data.categories[:100], data.labels[:100]
        assert export(backend, name, half) == 100
        assert backend.count(name) == 100
        assert [c for c in backend._client.list_collections() if c.startswith(name)] != []
        assert len([c for c in backend._client.list_collections() if c.startswith(name)]) == 1


@needs_milvus
def test_euclidean_collections_return_distances(tmp_path, data):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32) * rng.uniform(0.5, 2.0, size=(N, 1)).astype(np.float32)
    manifest = {**data.manifest, "metric": "euclidean"}
    with MilvusBackend(str(tmp_path / "vectors.db")) as backend:
        backend.export_arrays("shop_l2", data.ids, vectors, data.categories, data.labels, manifest=manifest)
        got = backend.search("shop_l2", data.queries, K, category="bags")
    exact = Index(vectors, "euclidean").search(data.queries, K, mask=np.array(data.categories) == "bags")
    for q, hits in enumerate(got):
        assert [i for i, _ in hits] == [data.ids[r] for r in exact.rows[q]]
        np.testing.assert_allclose([d for _, d in hits], exact.scores[q], rtol=1e-5)


@needs_milvus
def test_a_query_with_another_model_is_refused(tmp_path, data):
    from imgsim.storage.stores import StoreMismatchError

    with MilvusBackend(str(tmp_path / "vectors.db")) as backend:
        export(backend, "shop_fake", data)
        assert backend.search("shop_fake", data.queries[:1], 1, expect={"model": "fake", "fingerprint": "v1"})
        with pytest.raises(StoreMismatchError, match="fingerprint='v1'.*fingerprint='v2'.*again"):
            backend.search("shop_fake", data.queries[:1], 1, expect={"fingerprint": "v2"})


@needs_milvus
def test_export_store_from_a_catalogue(tmp_path, shop_dir):
    from imgsim.ingest.catalog import ingest
    from imgsim.storage.stores import model_spec, write_store

    class Fake:
        name, dim, image_size, options, fingerprint = "fake", 6, 8, {}, "f1"

    catalog = ingest(str(shop_dir), tmp_path / "shop")
    rng = np.random.default_rng(0)
    store = write_store(catalog, "pretrained", Fake(), rng.normal(size=(len(catalog.ok), 6)).astype(np.float32))
    with MilvusBackend(str(tmp_path / "vectors.db")) as backend:
        assert backend.export_store(catalog, store, "pretrained") == len(catalog.ok)
        name = catalog_collection(catalog, "pretrained")
        record = backend.manifest(name)
        assert record["catalog_fingerprint"] == catalog.fingerprint and record["dim"] == 6
        assert record["catalog_identity"] == catalog.identity
        backend.check(name, model_spec("pretrained", Fake()))
        row = 3
        got = backend.search(name, store.embeddings[row], 4, exclude_ids=[store.ids[row]],
                             category=catalog.ok["category"].iloc[row])
        rows, _ = hits_rows(got, store.ids)
        mask = (catalog.ok["category"] == catalog.ok["category"].iloc[row]).to_numpy()
        exact = Index(store.embeddings).search(store.embeddings[row], 4, mask=mask, exclude=[row])
        np.testing.assert_array_equal(rows[0], exact.rows[0])


@needs_milvus
def test_the_engine_and_cli_search_milvus_unchanged_for_the_user(built_catalog, tmp_path):
    """`export --to` a Milvus Lite file: the engine answers from Milvus as it did locally; add/remove follow."""
    import json
    import shutil

    from imgsim.cli import main
    from imgsim.engine import Engine
    from imgsim.errors import ImgsimError

    root = tmp_path / "shop"
    shutil.copytree(built_catalog, root)
    local = Engine.open(root)
    assert main(["export", str(root), "--to", str(tmp_path / "vectors.db")]) == 0
    remote = Engine.open(root)
    assert remote.search_backend("pretrained").startswith("milvus")
    for row in (0, 5):
        for category in (None, "greens"):
            want = local.search_item(row, "pretrained", k=4, category=category)
            got = remote.search_item(row, "pretrained", k=4, category=category)
            assert got.ids == want.ids
            np.testing.assert_allclose(got.items["score"], want.items["score"], atol=1e-4)
    with pytest.raises(ValueError, match="category"):
        remote.search_item(0, "pretrained", category="hats")
    # A collection missing behind backend.json (dropped, or exported elsewhere) is a plain, typed
    # error for the engine and an error line from the command line, not a traceback.
    record = json.loads((root / "backend.json").read_text())
    (root / "backend.json").write_text(json.dumps({**record, "uri": str(tmp_path / "empty.db")}))
    lost = Engine.open(root)
    with pytest.raises(MilvusBackendError, match="no Milvus collection") as caught:
        lost.search_item(0, "pretrained", k=4)
    assert isinstance(caught.value, ImgsimError) and "python -m" not in str(caught.value)
    lost.close()
    photo = local.items["thumb_path"].iloc[0]
    # (stderr is not captured: Milvus Lite's server threads log to it after the test.)
    assert main(["query", str(root), photo, "--approach", "pretrained", "-k", "2"]) == 2
    (root / "backend.json").write_text(json.dumps(record))
    remote.close()  # an embedded Milvus Lite file is one process's at a time
    remote.close()  # twice is safe
    gone = local.items["id"].iloc[0]
    assert main(["remove", str(root), gone]) == 0
    after = Engine.open(root)
    assert gone not in after.search_item(1, "pretrained", k=20).ids and len(after.items) == 11
    after.close()
    assert main(["export", str(root), "--to", "local"]) == 0
    assert Engine.open(root).search_backend("pretrained") == "exact"


def copy_catalog(built_catalog, root):
    import shutil

    shutil.copytree(built_catalog, root)
    return root


def physical(uri, collection):
    """The versioned collection an alias points at (what a re-export would replace)."""
    with MilvusBackend(uri) as backend:
        return backend._client.describe_collection(collection)["collection_name"]


@needs_milvus
def test_same_named_catalogues_in_two_folders_keep_their_own_collections(built_catalog, tmp_path):
    from imgsim.cli import main
    from imgsim.engine import Engine
    from imgsim.errors import ImgsimError
    from imgsim.ingest.catalog import Catalog

    m1 = copy_catalog(built_catalog, tmp_path / "m1" / "shop")
    m2 = copy_catalog(built_catalog, tmp_path / "m2" / "shop")
    dropped = Engine.open(m2).items["id"].iloc[:3].tolist()
    assert main(["remove", str(m2), *dropped]) == 0
    uri = str(tmp_path / "vectors.db")
    for root in (m1, m2):
        assert main(["export", str(root), "--to", uri]) == 0
    one, two = Catalog.load(m1), Catalog.load(m2)
    assert catalog_collection(one, "pretrained") != catalog_collection(two, "pretrained")
    for root, size in ((m1, 12), (m2, 9)):
        engine = Engine.open(root)
        assert engine.search_backend("pretrained").startswith("milvus")
        got = engine.search_item(0, "pretrained", k=20)
        assert len(engine.items) == size and set(got.ids) == set(engine.items["id"]) - {engine.items["id"].iloc[0]}
        engine.close()
    # A collection whose record names another catalogue is not served, in plain words.
    with MilvusBackend(uri) as backend:
        name = catalog_collection(two, "pretrained")
        backend.set_record(name, {**backend.manifest(name), "catalog_identity": one.identity})
    engine = Engine.open(m2)
    with pytest.raises(MilvusBackendError, match="holds another catalogue named 'shop'") as caught:
        engine.search_item(0, "pretrained", k=3)
    assert isinstance(caught.value, ImgsimError) and "python -m" not in str(caught.value)
    engine.close()


@needs_milvus
def test_a_change_updates_the_collection_in_place_and_a_stale_one_is_refused(built_catalog, tmp_path):
    import json

    from conftest import solid
    from PIL import Image

    from imgsim.build import refresh
    from imgsim.cli import main
    from imgsim.engine import Engine
    from imgsim.index.milvus_search import StaleCollectionError
    from imgsim.ingest.catalog import Catalog
    from imgsim.ingest.changes import add_items

    root = copy_catalog(built_catalog, tmp_path / "shop")
    uri = str(tmp_path / "vectors.db")
    assert main(["export", str(root), "--to", uri]) == 0
    name = catalog_collection(Catalog.load(root), "pretrained")
    first = physical(uri, name)
    new = tmp_path / "new.png"
    Image.fromarray(solid((230, 210, 20), 40)).save(new)
    # add and remove send only the changed rows: the same physical collection, answering as now
    assert main(["add", str(root), str(new)]) == 0
    assert physical(uri, name) == first
    engine = Engine.open(root)
    assert engine.search(new, "pretrained", k=1).ids == [engine.items["id"].iloc[-1]]
    gone = engine.items["id"].iloc[2]
    engine.close()
    assert main(["remove", str(root), gone]) == 0
    assert physical(uri, name) == first
    with MilvusBackend(uri) as backend:
        assert backend.count(name) == 12
        assert backend.manifest(name)["catalog_fingerprint"] == Catalog.load(root).fingerprint
    after = Engine.open(root)
    assert gone not in after.search_item(0, "pretrained", k=20).ids
    after.close()
    # The stores catch up but the collection does not (a refresh that stopped before Milvus):
    # the catalogue is not served from it, and says why.
    other = tmp_path / "other.png"
    Image.fromarray(solid((20, 20, 230), 40)).save(other)
    add_items(root, [str(other)])
    backend_file = root / "backend.json"
    record = backend_file.read_text()
    backend_file.unlink()
    refresh(Catalog.load(root))
    backend_file.write_text(record)
    stale = Engine.open(root)
    with pytest.raises(StaleCollectionError, match=r"is stale: .* \(12 items\), not as it is now \(13 items\)") as caught:
        stale.search(other, "pretrained", k=1)
    assert "refresh brings it up to date" in str(caught.value) and "python -m" not in str(caught.value)
    from imgsim.cli import _hint

    assert " refresh CATALOG" in _hint(caught.value)  # the command line adds the command itself
    stale.close()
    # It does not hold what the stores held before this refresh, so the refresh exports it again.
    lines = []
    refresh(Catalog.load(root), log=lines.append)
    assert "pretrained: 13 rows exported" in " ".join(lines)
    engine = Engine.open(root)
    assert engine.search(other, "pretrained", k=1).ids == [engine.items["id"].iloc[-1]]
    engine.close()
    assert json.loads(record)["approaches"]


@needs_milvus
def test_a_server_that_refuses_is_an_imgsim_error():
    """pymilvus's own exception never reaches the caller: the CLI and the app catch imgsim's."""
    from imgsim.errors import ImgsimError

    with pytest.raises(MilvusBackendError, match=r"Milvus at http://127.0.0.1:\d+ \(connect\)") as caught:
        MilvusBackend(f"http://127.0.0.1:{_free_port()}", timeout=5)
    assert isinstance(caught.value, ImgsimError) and isinstance(caught.value, RuntimeError)


# -- server mode -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusServer:
    """``milvus-lite server`` on 127.0.0.1 in its own process group."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_s: float = 30.0) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", str(self.port), "--max-workers", "4"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-lite server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"milvus-lite server did not listen on port {self.port} within {wait_s} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        self.log.close()


@pytest.fixture
def milvus_server(tmp_path):
    server = MilvusServer(tmp_path / "milvus-data")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@needs_milvus
@pytest.mark.slow
def test_server_mode_and_restart(milvus_server, data):
    name = collection_name("shop", "pretrained")
    with MilvusBackend(milvus_server.uri) as backend:
        assert export(backend, name, data) == N
        run_checks(backend, name, data)
        backend.delete(backend.collection_name("shop", "pretrained"), [data.ids[1]])
    survivor = MilvusBackend(milvus_server.uri)
    assert survivor.count(name) == N - 1
    milvus_server.stop()
    milvus_server.start()
    try:
        assert survivor.count(name) == N - 1  # reconnects, and loads the collection again
    finally:
        survivor.close()
    with MilvusBackend(milvus_server.uri) as backend:
        assert backend.count(name) == N - 1
        assert backend.manifest(name)["fingerprint"] == "v1"
        mask = np.array([i != data.ids[1] for i in data.ids])
        got = backend.search(name, data.queries, K)
        assert_same_top_k(got, data.index, data.queries, data.ids, K, mask=mask)
