"""One suite, every search backend: the same queries through each kind the factory registers.

Modelled on qdrant-client's congruence tests: exact search, the HNSW graph, IVF-PQ and Milvus Lite
(embedded) are opened by the factory on the same small store and must give the brute-force
answer (an ``argsort`` oracle written here, not the exact index) for plain, category-filtered,
excluded and region queries (with the region that won each row), and for conditions on any
column (``COLUMN=VALUE``, ``COLUMN>=N``, ``COLUMN<=N``), narrow and wide. A backend added to :data:`imgsim.index.factory.KINDS` is picked up
by the parametrisation; its setup goes in :data:`SETUPS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from imgsim.index import Filter, Hits, Metric, Opening, SearchBackend
from imgsim.index.factory import KINDS, open_backend, publish
from imgsim.ingest.catalog import OK, Catalog
from imgsim.storage.stores import Store, model_spec, write_store

N, DIM, K = 300, 16, 7
APPROACH = "pretrained"
CATEGORIES = ["shoes", "bags", 'say "hi"']
COLOURS = ["Blue", "Red", 'navy "blue"', "Grey"]


class Fake:
    """The identity of the model that 'made' the vectors (as a store records it)."""

    name, dim, image_size, options, fingerprint = "fake", DIM, 8, {}, "f1"


def have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def setup_exact(catalog: Catalog, store: Store, work: Path) -> dict[str, Any]:
    return {"kind": "local"}


def setup_hnsw(catalog: Catalog, store: Store, work: Path) -> dict[str, Any]:
    if not have("faiss"):
        pytest.skip("faiss is not installed")
    from imgsim.index.hnsw import AnnConfig, AnnIndex, ann_dir

    # exact_below=0: even filtered queries go through the graph, the part that could be wrong.
    config = AnnConfig(M=16, ef_construction=64, ef_search=64, dtype="float32", exact_below=0, threads=1)
    AnnIndex.build(store.embeddings, store.manifest["metric"], config).save(ann_dir(store.root, APPROACH))
    return {"kind": "local"}


def setup_ivfpq(catalog: Catalog, store: Store, work: Path) -> dict[str, Any]:
    if not have("faiss"):
        pytest.skip("faiss is not installed")
    from imgsim.index.ivfpq import IvfPqConfig, IvfPqIndex
    from imgsim.storage import layout

    # Every list scanned, a shortlist of every row, float32 re-rank, exact_below=0 (filters go
    # through the lists): any difference from the oracle is a bookkeeping bug, not approximation.
    config = IvfPqConfig(nlist=4, m=4, nbits=6, nprobe=4, shortlist=N, rerank_dtype="float32", exact_below=0,
                         threads=1)
    index = IvfPqIndex.build(store.embeddings, store.manifest["metric"], config)
    index.save(layout.ivfpq_dir(store.root, APPROACH))
    return {"kind": "local"}


def setup_milvus(catalog: Catalog, store: Store, work: Path) -> dict[str, Any]:
    if not have("pymilvus", "milvus_lite"):
        pytest.skip("pymilvus and milvus-lite are not installed")
    return publish(catalog, str(work / "vectors.db"), {APPROACH: store})


#: How to make each registered kind answer for a store; returns the ``backend.json`` record.
SETUPS: dict[str, Callable[[Catalog, Store, Path], dict[str, Any]]] = {
    "exact": setup_exact, "hnsw": setup_hnsw, "ivfpq": setup_ivfpq, "milvus": setup_milvus,
}


def test_every_registered_backend_has_a_setup_here():
    assert set(SETUPS) == set(KINDS), "a new backend kind needs its setup in SETUPS"


def make_store(root: Path, metric: str) -> tuple[Catalog, Store]:
    """A catalogue of N items (awkward ids and categories) with a store of clustered vectors."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(12, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 12, N)] + 0.4 * rng.normal(size=(N, DIM)).astype(np.float32)
    if metric == "cosine":
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"item-{i}" for i in range(N)]
    ids[3] = 'it"em 3'
    items = pd.DataFrame({"id": ids, "status": OK, "category": [CATEGORIES[i % 3] for i in range(N)],
                          "label": [f"l{i % 5}" for i in range(N)], "sha256": ids, "source": ids,
                          "thumb": [f"thumbs/{i}.png" for i in range(N)],
                          "colour": [COLOURS[i % 4] for i in range(N)],
                          "price": [float((i * 37) % 200) for i in range(N)]})
    catalog = Catalog(root, {"source": "test"}, items)
    return catalog, write_store(catalog, APPROACH, Fake(), vectors, metric=metric)


def oracle(vectors: np.ndarray, queries: np.ndarray, metric: str, k: int, eligible: np.ndarray) -> Hits:
    """Brute force: each row scored by its best query vector (one query -> plain k-NN), argsort."""
    if metric == "cosine":
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        score = (q @ (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).T).max(axis=0)
    else:
        score = -np.linalg.norm(vectors[None] - queries[:, None], axis=2).min(axis=0)
    rows = [r for r in np.argsort(-score, kind="stable") if eligible[r]][:k]
    best = score[rows] if metric == "cosine" else -score[rows]
    return Hits(np.array([rows]), np.array([best], dtype=np.float32))


@pytest.fixture(scope="module", params=["cosine", "euclidean"])
def metric(request) -> str:
    return request.param


@pytest.fixture(scope="module", params=list(KINDS))
def opened(request, metric, tmp_path_factory) -> tuple[str, SearchBackend, Store, Catalog]:
    name = request.param
    work = tmp_path_factory.mktemp(f"{name}-{metric}")
    catalog, store = make_store(work / "shop", metric)
    record = SETUPS[name](catalog, store, work)
    opening = Opening(catalog, APPROACH, store, catalog.ok, Metric(metric), record,
                      lambda: model_spec(APPROACH, Fake()))
    backend = open_backend(opening)
    own = KINDS[name].open(opening)
    assert own is not None, f"{name} did not answer for the store it was set up for"
    try:
        # The factory picks this kind (the first that answers), not one later in the registry.
        assert backend.describe() == own.describe()
    finally:
        own.close()
    yield name, backend, store, catalog
    backend.close()
    backend.close()  # twice is safe


def queries_for(store: Store) -> np.ndarray:
    rng = np.random.default_rng(5)
    picks = np.asarray(store.embeddings)[[0, 3, 40, 151, 299]]
    return picks + 0.05 * rng.normal(size=picks.shape).astype(np.float32)


def assert_congruent(got: Hits, want: Hits, row: int = 0, tol: float = 1e-4) -> None:
    assert got.rows[row].tolist() == want.rows[0].tolist()
    np.testing.assert_allclose(got.scores[row], want.scores[0], atol=tol)


def test_plain_queries(opened, metric):
    name, backend, store, _ = opened
    queries = queries_for(store)
    got = backend.search(queries, K)
    assert got.rows.shape == (len(queries), K) and got.rows.dtype == np.int64
    everything = np.ones(N, dtype=bool)
    for q in range(len(queries)):
        assert_congruent(got, oracle(np.asarray(store.embeddings), queries[q:q + 1], metric, K, everything), q)


def test_category_filter(opened, metric):
    name, backend, store, catalog = opened
    queries = queries_for(store)
    for category in CATEGORIES:
        eligible = (catalog.ok["category"] == category).to_numpy()
        got = backend.search(queries, K, filter=Filter(category))
        for q in range(len(queries)):
            assert_congruent(got, oracle(np.asarray(store.embeddings), queries[q:q + 1], metric, K, eligible), q)
    with pytest.raises(ValueError, match="no item has category 'hats'"):
        backend.search(queries, K, filter=Filter("hats"))


def test_excluded_rows(opened, metric):
    """The query's own row left out (one row), and several rows with a category."""
    name, backend, store, catalog = opened
    vectors = np.asarray(store.embeddings)
    for row in (0, 3, 151):
        eligible = np.arange(N) != row
        got = backend.search(vectors[row], K, filter=Filter(exclude_rows=(row,)))
        assert row not in got.rows[0]
        assert_congruent(got, oracle(vectors, vectors[row:row + 1], metric, K, eligible))
    got = backend.search(vectors[0], K, filter=Filter(exclude_rows=(N + 5,)))  # past the end: nothing
    assert_congruent(got, oracle(vectors, vectors[:1], metric, K, np.ones(N, dtype=bool)))
    left_out = (3, 6, 9, 12)
    eligible = (catalog.ok["category"] == CATEGORIES[0]).to_numpy() & ~np.isin(np.arange(N), left_out)
    got = backend.search(vectors[3], K, filter=Filter(CATEGORIES[0], left_out))
    assert_congruent(got, oracle(vectors, vectors[3:4], metric, K, eligible))


def test_region_queries(opened, metric):
    """Several vectors as one query: each row scored by its best region (exact max fusion)."""
    name, backend, store, catalog = opened
    vectors = np.asarray(store.embeddings)
    # Regions of one photo overlap: the same rows come back for several regions with different
    # scores, so only each row's best region gives the oracle's order.
    rng = np.random.default_rng(8)
    regions = vectors[[40, 40, 40, 151]] + 0.3 * rng.normal(size=(4, DIM)).astype(np.float32)
    everything = np.ones(N, dtype=bool)
    got = backend.search_regions(regions, K, kinds=("whole", "grid", "grid", "box"))
    assert got.rows.shape == (1, K)
    assert_congruent(got, oracle(vectors, regions, metric, K, everything))
    # which region gave each row its score (the matched box of a photo's result)
    if metric == "cosine":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        won = (regions / np.linalg.norm(regions, axis=1, keepdims=True) @ unit.T).argmax(axis=0)
    else:
        won = np.linalg.norm(vectors[None] - regions[:, None], axis=2).argmin(axis=0)
    assert got.regions is not None and got.regions[0].tolist() == won[got.rows[0]].tolist()
    eligible = (catalog.ok["category"] == CATEGORIES[1]).to_numpy() & (np.arange(N) != 40)
    got = backend.search_regions(regions, K, filter=Filter(CATEGORIES[1], (40,)))
    assert_congruent(got, oracle(vectors, regions, metric, K, eligible))


#: Conditions on columns Milvus does not store: a text column (a value with quotes), a numeric
#: range, a narrow one (a handful of rows: HNSW's exact fallback, Milvus's "id in" list), a wide
#: one (Milvus's "id not in" list) and a category with a condition.
WHERE_CASES = [
    (None, ("colour=Blue",)),
    (None, ('colour=navy "blue"',)),
    (None, ("price>=50", "price<=120")),
    (None, ("price<=4",)),
    (None, ("price>=10",)),
    (CATEGORIES[1], ("colour=Grey", "price>=20")),
]


def where_eligible(catalog: Catalog, category: str | None, where: tuple[str, ...]) -> np.ndarray:
    """The oracle's rows for a filter, from the table written in make_store (not Filter.mask)."""
    items = catalog.ok
    eligible = np.ones(N, dtype=bool) if category is None else (items["category"] == category).to_numpy()
    for text in where:
        if text.startswith("colour="):
            eligible = eligible & (items["colour"] == text.split("=", 1)[1]).to_numpy()
        elif ">=" in text:
            eligible = eligible & (items["price"] >= float(text.split(">=")[1])).to_numpy()
        else:
            eligible = eligible & (items["price"] <= float(text.split("<=")[1])).to_numpy()
    return eligible


@pytest.mark.parametrize(("category", "where"), WHERE_CASES)
def test_conditions_on_any_column(opened, metric, category, where):
    """k results whenever k rows pass, and exactly the oracle's, however narrow the filter."""
    name, backend, store, catalog = opened
    vectors = np.asarray(store.embeddings)
    queries = queries_for(store)
    eligible = where_eligible(catalog, category, where)
    assert 0 < eligible.sum() < N
    got = backend.search(queries, K, filter=Filter(category, where=where))
    assert got.rows.shape == (len(queries), min(K, int(eligible.sum())))
    for q in range(len(queries)):
        assert eligible[got.rows[q]].all()
        assert_congruent(got, oracle(vectors, queries[q:q + 1], metric, K, eligible), q)
    regions = vectors[[40, 151]] + 0.1
    got = backend.search_regions(regions, K, filter=Filter(category, (40,), where))
    assert_congruent(got, oracle(vectors, regions, metric, K, eligible & (np.arange(N) != 40)))


def test_milvus_id_lists_push_conditions_into_the_graph_search(opened, metric, monkeypatch):
    """With the exact fallback off, Milvus answers conditions through its id lists."""
    name, backend, store, catalog = opened
    if name != "milvus":
        pytest.skip("Milvus only")
    from imgsim.index import milvus_search

    monkeypatch.setattr(milvus_search, "EXACT_BELOW", 0)
    queries = queries_for(store)
    # a quarter and a third of the rows ("id in"), and nearly all of them ("id not in")
    for category, where in (WHERE_CASES[0], WHERE_CASES[2], WHERE_CASES[4]):
        eligible = where_eligible(catalog, category, where)
        got = backend.search(queries, K, filter=Filter(category, where=where))
        for q in range(len(queries)):
            assert_congruent(got, oracle(np.asarray(store.embeddings), queries[q:q + 1], metric, K, eligible), q)


def test_conditions_that_cannot_hold_are_refused(opened):
    name, backend, store, catalog = opened
    queries = queries_for(store)
    with pytest.raises(ValueError, match=r"no column 'size'; its columns are: id, category, label, colour, price"):
        backend.search(queries, K, filter=Filter(where=("size=M",)))
    with pytest.raises(ValueError, match="colour is not a numeric column"):
        backend.search(queries, K, filter=Filter(where=("colour>=3",)))
    with pytest.raises(ValueError, match="no item has colour = 'Purple'"):
        backend.search(queries, K, filter=Filter(where=("colour=Purple",)))
    # conditions that each hold but never together: an empty answer, not an error
    got = backend.search(queries, K, filter=Filter(where=("price>=150", "price<=20")))
    assert got.rows.shape == (len(queries), 0)


def test_k_larger_than_the_filtered_rows(opened, metric):
    name, backend, store, catalog = opened
    vectors = np.asarray(store.embeddings)
    got = backend.search(vectors[:2], N, filter=Filter(CATEGORIES[2]))
    assert got.rows.shape == (2, N // 3)
    assert set(got.rows[0].tolist()) == set(np.flatnonzero(catalog.ok["category"] == CATEGORIES[2]).tolist())
    with pytest.raises(ValueError, match="`k` must be"):
        backend.search(vectors[:1], 0)


def test_filter_values_say_what_they_received():
    assert Filter("").category is None and Filter(exclude_rows=[np.int64(2)]).exclude_rows == (2,)
    with pytest.raises(ValueError, match=r"`exclude_rows` must be rows >= 0. Received: exclude_rows=\(-1,\)"):
        Filter(exclude_rows=(-1,))
    with pytest.raises(ValueError, match="`category` must be a string or None. Received: category=3"):
        Filter(3)
    assert [str(c) for c in Filter(where=(" price >= 10 ", "colour=a=b")).where] == ["price>=10", "colour=a=b"]
    with pytest.raises(ValueError, match="must read COLUMN=VALUE, COLUMN>=NUMBER or COLUMN<=NUMBER. Received: 'blue'"):
        Filter(where=("blue",))
    with pytest.raises(ValueError, match="price>= needs a number. Received: 'cheap'"):
        Filter(where=("price>=cheap",))
    with pytest.raises(ValueError, match="`where` must be a sequence of conditions"):
        Filter(where="price>=3")


def test_the_factory_refuses_unknown_backends_and_locations(tmp_path):
    from imgsim.index.factory import read_backend, service_for
    from imgsim.storage.artifacts import ArtifactError
    from imgsim.storage.layout import backend_file

    catalog, _ = make_store(tmp_path / "shop", "cosine")
    assert read_backend(catalog) == {"kind": "local"}
    for record in ('{"kind": "qdrant", "uri": "x"}', '{"kind": "milvus"}', "[1]", "{not json"):
        backend_file(catalog.root).write_text(record)
        with pytest.raises(ArtifactError, match="backend.json (names no known backend|is unreadable)"):
            read_backend(catalog)
    assert service_for("vectors.db") == "milvus" and service_for("http://127.0.0.1:19530") == "milvus"
    with pytest.raises(ValueError, match=r"`uri` must be 'local' or .*milvus: .*Received: uri='ftp://h'"):
        service_for("ftp://h")


def test_a_new_backend_is_one_module_and_one_registry_entry(tmp_path, monkeypatch):
    """A backend registered in front of the others serves the engine; nothing else is edited."""
    from imgsim.engine import Engine
    from imgsim.index import NO_FILTER, factory

    closed = []

    class BruteForce(SearchBackend):  # stands in for a new module (a Qdrant backend, say)
        metric = Metric.COSINE

        def search(self, queries, k, *, filter=NO_FILTER):
            score = np.atleast_2d(queries) @ vectors.T
            rows = np.argsort(-score, axis=1, kind="stable")[:, :k]
            return Hits(rows, np.take_along_axis(score, rows, axis=1).astype(np.float32))

        def describe(self):
            return "brute force (test)"

        def close(self):
            closed.append(True)

    def open_brute_force(opening: Opening) -> BruteForce | None:  # the new module's opener
        return BruteForce() if opening.metric is opening.store_metric else None

    kind = factory.BackendKind(open_brute_force)
    monkeypatch.setattr(factory, "KINDS", {"brute": kind, **factory.KINDS})
    catalog, store = make_store(tmp_path / "shop", "cosine")
    vectors = np.asarray(store.embeddings)
    engine = Engine(catalog)
    assert engine.search_backend(APPROACH) == "brute force (test)"
    # the protocol's default region search (merged per-region lists) is exact max fusion
    rng = np.random.default_rng(2)
    regions = vectors[[7, 7, 8]] + 0.3 * rng.normal(size=(3, DIM)).astype(np.float32)
    regions /= np.linalg.norm(regions, axis=1, keepdims=True)
    got = engine.index(APPROACH).search_regions(regions, K)
    assert_congruent(got, oracle(vectors, regions, "cosine", K, np.ones(N, dtype=bool)))
    # an opener that declines (here: another metric than the store's) falls through to exact
    assert engine.index(APPROACH, "euclidean").describe() == "exact"
    engine.close()
    engine.close()
    assert closed == [True]


def test_the_engine_names_no_backend():
    """Engine, loader, query pipeline and views know only the protocol and the factory."""
    import imgsim

    package = Path(imgsim.__file__).parent
    for module in ("engine.py", "loader.py", "query.py", "views.py"):
        text = (package / module).read_text("utf-8").lower()
        for word in ("milvus", "faiss", "hnsw", "annindex", "__name__"):
            assert word not in text, f"{module} mentions {word}"
