"""The approximate index against the exact one (the oracle) on small clustered data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from imgsim.index.exact import Index  # noqa: E402
from imgsim.index.hnsw import (  # noqa: E402
    AnnConfig,
    AnnIndex,
    AnnMismatchError,
    embeddings_fingerprint,
    should_use_ann,
)
from imgsim.storage.artifacts import ArtifactError  # noqa: E402

N, DIM, K = 3_000, 48, 10
# One thread: tests run beside other work on two cores, where OpenMP threads would only spin.
CONFIG = AnnConfig(M=16, ef_construction=64, ef_search=64, dtype="float32", exact_below=200, threads=1)


def clustered(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Points around 60 fixed centres (the same centres for every seed)."""
    centres = np.random.default_rng(99).standard_normal((60, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, 60, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(N)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(60, seed=1)


@pytest.fixture(scope="module", params=[("cosine", 0), ("euclidean", 0), ("cosine", 16), ("euclidean", 16)],
                ids=lambda p: f"{p[0]}-graph_dims{p[1]}")
def built(request, data) -> tuple[AnnIndex, Index]:
    metric, graph_dims = request.param
    config = dataclasses.replace(CONFIG, graph_dims=graph_dims, rerank=10)
    return AnnIndex.build(data, metric, config), Index(data, metric)


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact)]))


def test_recall_and_scores_match_exact(built, queries):
    ann, exact = built
    got, want = ann.search(queries, K), exact.search(queries, K)
    assert got.rows.shape == want.rows.shape == (len(queries), K)
    assert got.rows.dtype == np.int64 and got.scores.dtype == np.float32
    assert recall(got.rows, want.rows) >= 0.95
    # Same metric and scale as Index (cosine similarity, or euclidean distance).
    np.testing.assert_allclose(got.scores[:, 0], want.scores[:, 0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "sq8"])
def test_compressed_storage_recalls(data, queries, dtype):
    ann = AnnIndex.build(data, "cosine", dataclasses.replace(CONFIG, dtype=dtype))
    floor = 0.95 if dtype == "float16" else 0.85
    assert recall(ann.search(queries, K).rows, Index(data).search(queries, K).rows) >= floor
    assert ann.nbytes < AnnIndex.build(data, "cosine", CONFIG).nbytes


@pytest.mark.parametrize("fraction", [0.02, 0.3])
def test_filters_return_only_eligible_rows_and_match_exact(built, queries, fraction):
    ann, exact = built
    mask = np.random.default_rng(2).random(N) < fraction  # 60 rows: exact path; 900: in the graph
    got, want = ann.search(queries, K, mask=mask), exact.search(queries, K, mask=mask)
    assert got.rows.shape == want.rows.shape == (len(queries), K)
    assert mask[got.rows].all()
    assert recall(got.rows, want.rows) >= (1.0 if mask.sum() <= CONFIG.exact_below else 0.9)


def test_filter_with_fewer_rows_than_k_returns_them_all(built, queries):
    ann, exact = built
    mask = np.zeros(N, dtype=bool)
    mask[[5, 17, 2999]] = True
    got = ann.search(queries, K, mask=mask)
    assert got.rows.shape == (len(queries), 3)
    np.testing.assert_array_equal(np.sort(got.rows, axis=1), np.tile([5, 17, 2999], (len(queries), 1)))
    np.testing.assert_array_equal(got.rows, exact.search(queries, K, mask=mask).rows)


@pytest.mark.parametrize("graph_dims", [0, 16])
@pytest.mark.parametrize("eligible", [1, 30])
def test_selective_filter_through_the_graph_never_comes_back_short(data, queries, graph_dims, eligible):
    # exact_below=0 forces the graph even for 1 or 30 eligible rows: the beam must widen, then
    # fall back to exact search, also when the graph meets no eligible row at all.
    config = dataclasses.replace(CONFIG, exact_below=0, ef_search=16, graph_dims=graph_dims)
    ann = AnnIndex.build(data, "cosine", config)
    mask = np.zeros(N, dtype=bool)
    mask[np.random.default_rng(3).choice(N, eligible, replace=False)] = True
    got = ann.search(queries, K, mask=mask)
    assert got.rows.shape == (len(queries), min(K, eligible)) and mask[got.rows].all()
    assert recall(got.rows, Index(data).search(queries, K, mask=mask).rows) >= (1.0 if eligible == 1 else 0.8)


def test_exclude_drops_the_query_row(built, data):
    ann, exact = built
    rows = np.arange(0, 40)
    got = ann.search(data[rows], K, exclude=rows)
    assert got.rows.shape == (len(rows), K)
    assert not (got.rows == rows[:, None]).any()
    assert recall(got.rows, exact.search(data[rows], K, exclude=rows).rows) >= 0.95
    mixed = ann.search(data[rows], K, exclude=np.where(rows % 2 == 0, rows, -1), mask=np.ones(N, bool))
    assert mixed.rows.shape == (len(rows), K)


def test_k_larger_than_the_index(queries):
    small = clustered(25)
    ann, exact = AnnIndex.build(small, "cosine", CONFIG), Index(small)
    got = ann.search(queries[:3], 100)
    assert got.rows.shape == (3, 25)
    np.testing.assert_array_equal(got.rows, exact.search(queries[:3], 100).rows)
    assert ann.search(small[:2], 100, exclude=[0, 1]).rows.shape == (2, 24)
    assert ann.search(queries[0], 5).rows.shape == (1, 5)


def test_add_and_remove_mirror_the_matrix(data, queries):
    ann = AnnIndex.build(data[:2_000], "cosine", CONFIG)
    new_rows = ann.add(data[2_000:])
    np.testing.assert_array_equal(new_rows, np.arange(2_000, N))
    gone = np.random.default_rng(4).choice(N, 400, replace=False)
    ann.remove(gone)
    kept = np.delete(data, gone, axis=0)
    assert ann.size == len(kept) and ann.tombstones == 400
    assert ann.fingerprint == embeddings_fingerprint(kept)
    got, want = ann.search(queries, K), Index(kept).search(queries, K)
    assert got.rows.max() < len(kept)
    assert recall(got.rows, want.rows) >= 0.95
    # A removed row is never returned: its own vector now finds other rows.
    probe = ann.search(data[gone[:20]], 1)
    assert not np.isclose(probe.scores[:, 0], 1.0, atol=1e-6).any()
    # Filters and exact fallbacks address rows after the renumbering too.
    mask = np.zeros(len(kept), dtype=bool)
    mask[-50:] = True
    np.testing.assert_array_equal(ann.search(queries, K, mask=mask).rows,
                                  Index(kept).search(queries, K, mask=mask).rows)


def test_follow_updates_in_place_to_mirror_a_changed_store(tmp_path, data, queries):
    ann = AnnIndex.build(data[:2_000], "cosine", CONFIG)
    ann.save(tmp_path / "ann")
    build_id, nodes = ann.build_id, 2_000
    # what remove then add do to a store: rows deleted anywhere, rows appended at the end
    gone = np.random.default_rng(5).choice(2_000, 150, replace=False)
    store = np.concatenate([np.delete(data[:2_000], gone, axis=0), data[2_000:2_100]])
    with pytest.raises(AnnMismatchError):
        AnnIndex.load(tmp_path / "ann", store)
    stale = AnnIndex.load(tmp_path / "ann", None)
    assert stale.follow(store) == (150, 100)
    assert stale.build_id == build_id and stale.tombstones == 150 and stale.size + stale.tombstones == nodes + 100
    assert stale.fingerprint == embeddings_fingerprint(store)
    stale.save(tmp_path / "ann")
    loaded = AnnIndex.load(tmp_path / "ann", store)  # now current for the changed store
    assert loaded.build_id == build_id
    got, want = loaded.search(queries, K), Index(store).search(queries, K)
    assert recall(got.rows, want.rows) >= 0.95
    np.testing.assert_array_equal(loaded.search(store[-100:], 1).rows[:, 0], np.arange(len(store) - 100, len(store)))
    # a store whose rows were reordered is still mirrored exactly (at the cost of a rebuild's work)
    assert loaded.follow(store[::-1].copy())[1] > 0 and loaded.fingerprint == embeddings_fingerprint(store[::-1])


def test_save_load_round_trip(tmp_path, built, data, queries):
    ann, _ = built
    ann.save(tmp_path / "ann")
    manifest = json.loads((tmp_path / "ann" / "manifest.json").read_text())
    assert manifest["kind"] == "ann_index" and manifest["count"] == N and manifest["dim"] == DIM
    assert manifest["library"] == "faiss-cpu" and manifest["config"]["M"] == CONFIG.M
    loaded = AnnIndex.load(tmp_path / "ann", data)
    assert loaded.metric == ann.metric and loaded.config == ann.config and loaded.nbytes == ann.nbytes
    before, after = ann.search(queries, K), loaded.search(queries, K)
    np.testing.assert_array_equal(before.rows, after.rows)
    np.testing.assert_allclose(before.scores, after.scores)
    # Saving again over it is atomic and leaves no temporary directories behind.
    loaded.save(tmp_path / "ann")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".ann@v")) == ["ann"]  # + its version
    # An index saved when the config still named its kind ("hnsw", the only one) loads the same.
    assert "kind" not in manifest["config"]
    old = {**manifest, "config": {"kind": "hnsw", **manifest["config"]}}
    (tmp_path / "ann" / "manifest.json").write_text(json.dumps(old))
    assert AnnIndex.load(tmp_path / "ann", data).config == ann.config


def test_load_refuses_other_embeddings(tmp_path, data):
    ann = AnnIndex.build(data[:500], "cosine", CONFIG)
    ann.save(tmp_path / "ann")
    changed = data[:500].copy()
    changed[123, 4] += 1e-3
    with pytest.raises(AnnMismatchError, match="other embeddings"):
        AnnIndex.load(tmp_path / "ann", changed)
    with pytest.raises(AnnMismatchError, match="shape"):
        AnnIndex.load(tmp_path / "ann", data[:501])
    with pytest.raises(ArtifactError, match="no manifest.json"):
        AnnIndex.load(tmp_path / "missing", data[:500])
    manifest = json.loads((tmp_path / "ann" / "manifest.json").read_text())
    (tmp_path / "ann" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(AnnMismatchError, match="format 99"):
        AnnIndex.load(tmp_path / "ann", data[:500])


def test_bad_input_is_refused(built, queries):
    ann, _ = built
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        ann.search(queries, 0)
    with pytest.raises(ValueError, match="dim"):
        ann.search(queries[:, :10], K)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        ann.search(queries, K, mask=np.ones(N - 1, bool))
    with pytest.raises(ValueError, match="`exclude` needs one row per query"):
        ann.search(queries, K, exclude=[1, 2])
    with pytest.raises(ValueError, match="`M` must be an integer >= 2. Received: M=1"):
        AnnConfig(M=1)
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        AnnConfig(dtype="int4")
    with pytest.raises(ValueError, match="`graph_dims` must be < the embeddings' dim 48"):
        AnnIndex.build(np.ones((5, DIM), np.float32), config=AnnConfig(graph_dims=DIM))
    with pytest.raises(ValueError, match="non-empty"):
        AnnIndex.build(np.zeros((0, DIM), np.float32))


def test_should_use_ann_threshold():
    config = AnnConfig(min_rows=100_000)
    assert not should_use_ann(99_999, config)
    assert should_use_ann(100_000, config)
