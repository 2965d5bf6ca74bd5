"""The IVF-PQ index against exact search (the oracle) on small clustered data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from imgsim.index.exact import Index  # noqa: E402
from imgsim.index.hnsw_files import AnnMismatchError  # noqa: E402
from imgsim.index.ivfpq import IvfPqConfig, IvfPqIndex  # noqa: E402
from imgsim.storage.artifacts import ArtifactError  # noqa: E402

N, DIM, K = 3_000, 48, 10
# One thread (two loaded cores); 16 lists of ~190 rows, all scanned under a filter.
CONFIG = IvfPqConfig(nlist=16, m=8, nprobe=8, shortlist=100, exact_below=0, threads=1)


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Points around 60 fixed centres (the same centres for every seed)."""
    centres = np.random.default_rng(99).standard_normal((60, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return centres[rng.integers(0, 60, n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(N)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(60, seed=1)


@pytest.fixture(scope="module", params=[("cosine", "sq8"), ("euclidean", "sq8"), ("cosine", "float16")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def built(request, data) -> tuple[IvfPqIndex, Index]:
    metric, rerank_dtype = request.param
    config = dataclasses.replace(CONFIG, rerank_dtype=rerank_dtype)
    return IvfPqIndex.build(data, metric, config), Index(data, metric)


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact)]))


def test_recall_and_scores_match_exact(built, queries):
    ivf, exact = built
    got, truth = ivf.search(queries, K), exact.search(queries, K)
    assert got.rows.shape == (len(queries), K)
    assert recall(got.rows, truth.rows) >= 0.95
    # Scores come from the re-rank vectors: close to exact, far closer than the PQ codes'.
    np.testing.assert_allclose(got.scores[:, 0], truth.scores[:, 0], atol=0.02)
    if ivf.config.rerank_dtype == "float16":
        # Every list scanned: the shortlist holds the true top k, and float16 ranks them as exact.
        wide = ivf.search(queries, K, nprobe=CONFIG.nlist)
        assert recall(wide.rows, truth.rows) >= 0.99
        np.testing.assert_allclose(wide.scores, truth.scores, atol=2e-3)


@pytest.mark.parametrize("fraction", [0.01, 0.2])
def test_filters_return_k_eligible_rows_and_match_exact(built, queries, fraction):
    ivf, exact = built
    mask = np.random.default_rng(3).random(N) < fraction
    got, truth = ivf.search(queries, K, mask=mask), exact.search(queries, K, mask=mask)
    assert got.rows.shape == (len(queries), K)
    assert mask[got.rows].all()
    assert recall(got.rows, truth.rows) >= 0.95


def test_filter_with_fewer_rows_than_k_returns_them_all(built, queries):
    ivf, _ = built
    mask = np.zeros(N, bool)
    mask[[5, 900, 2999]] = True
    got = ivf.search(queries, K, mask=mask)
    assert got.rows.shape == (len(queries), 3)
    assert all(set(row) == {5, 900, 2999} for row in got.rows.tolist())


def test_exclude_drops_the_query_row(built, data):
    ivf, _ = built
    rows = np.array([0, 17, 2500])
    got = ivf.search(data[rows], K, exclude=rows)
    assert got.rows.shape == (3, K)
    assert not any(r in row for r, row in zip(rows.tolist(), got.rows.tolist()))
    # Without the exclusion each row finds itself first.
    np.testing.assert_array_equal(ivf.search(data[rows], K).rows[:, 0], rows)


def test_add_finds_new_rows_and_remove_never_returns_removed_ones(data, queries):
    ivf = IvfPqIndex.build(data, "cosine", CONFIG)
    build_id = ivf.build_id
    new = clustered(200, seed=5)
    rows = ivf.add(new)
    np.testing.assert_array_equal(rows, np.arange(N, N + 200))
    np.testing.assert_array_equal(ivf.search(new, 1).rows[:, 0], rows)  # each new row is its own nearest
    gone = np.random.default_rng(4).choice(N + 200, 600, replace=False)
    ivf.remove(gone)
    kept = np.delete(np.concatenate([data, new]), gone, axis=0)
    assert ivf.size == len(kept) and ivf.tombstones == 600 and ivf.build_id == build_id
    truth = Index(kept, "cosine").search(queries, K)
    got = ivf.search(queries, K)
    assert recall(got.rows, truth.rows) >= 0.95  # rows renumbered as np.delete does
    # A removed row, queried with its own vector, never comes back (its survivors do, renumbered).
    removed_vectors = np.concatenate([data, new])[gone[:50]]
    for mask in (None, np.random.default_rng(6).random(len(kept)) < 0.05):
        hits = ivf.search(removed_vectors, K, mask=mask)
        assert (hits.rows >= 0).all() and (hits.rows < len(kept)).all()
        assert not np.isclose(hits.scores[:, 0], 1.0, atol=1e-4).any()  # never the removed vector itself
    # follow() brings a saved-then-changed index in step the same way.
    assert ivf.follow(kept) == (0, 0)


def test_save_load_round_trip_memory_maps_the_rerank_vectors(tmp_path, built, data, queries):
    ivf, _ = built
    ivf.save(tmp_path / "ivf")
    manifest = json.loads((tmp_path / "ivf" / "manifest.json").read_text())
    assert manifest["kind"] == "ivfpq_index" and manifest["count"] == N and manifest["dim"] == DIM
    assert manifest["config"]["nlist"] == 16 and manifest["fingerprint"] == ivf.fingerprint
    loaded = IvfPqIndex.load(tmp_path / "ivf", data)
    assert loaded.config == ivf.config and loaded.metric == ivf.metric and loaded.build_id == ivf.build_id
    before, after = ivf.search(queries, K), loaded.search(queries, K)
    np.testing.assert_array_equal(before.rows, after.rows)
    np.testing.assert_allclose(before.scores, after.scores)
    with pytest.raises(ValueError, match="read-only"):
        loaded.add(data[:2])  # FAISS would abort the process growing a memory map
    writable = IvfPqIndex.load(tmp_path / "ivf", None, mmap=False)
    assert writable.add(data[:2]).tolist() == [N, N + 1]


def test_a_stale_index_is_refused_and_the_backend_passes_it_over(tmp_path, data):
    ivf = IvfPqIndex.build(data[:1000], "cosine", CONFIG)
    ivf.save(tmp_path / "ivf")
    changed = data[:1000].copy()
    changed[123, 4] += 1e-3
    with pytest.raises(AnnMismatchError, match="other embeddings"):
        IvfPqIndex.load(tmp_path / "ivf", changed)
    with pytest.raises(AnnMismatchError, match="shape"):
        IvfPqIndex.load(tmp_path / "ivf", data[:1001])
    manifest = json.loads((tmp_path / "ivf" / "manifest.json").read_text())
    (tmp_path / "ivf" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(AnnMismatchError, match="format 99"):
        IvfPqIndex.load(tmp_path / "ivf", data[:1000])


def test_corrupt_or_foreign_files_are_a_clear_artifact_error(tmp_path, data):
    import faiss

    ivf = IvfPqIndex.build(data[:1000], "euclidean", CONFIG)
    ivf.save(tmp_path / "ivf")
    (tmp_path / "ivf" / "index.faiss").write_bytes(b"not a faiss file" * 10)
    with pytest.raises(ArtifactError, match="damaged"):
        IvfPqIndex.load(tmp_path / "ivf", data[:1000])
    # A valid FAISS file of another kind (a flat index) in its place.
    flat = faiss.IndexFlatL2(DIM)
    flat.add(data[:1000])
    faiss.write_index(flat, str(tmp_path / "ivf" / "index.faiss"))
    with pytest.raises(ArtifactError, match="disagree"):
        IvfPqIndex.load(tmp_path / "ivf", data[:1000])
    with pytest.raises(ArtifactError, match="no manifest.json"):
        IvfPqIndex.load(tmp_path / "missing", data[:1000])


def test_bad_input_and_settings_are_refused(built, queries):
    ivf, _ = built
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        ivf.search(queries, 0)
    with pytest.raises(ValueError, match="dim"):
        ivf.search(queries[:, :10], K)
    with pytest.raises(ValueError, match="`mask` must have shape"):
        ivf.search(queries, K, mask=np.ones(N - 1, bool))
    with pytest.raises(ValueError, match="`nprobe` must be an integer >= 1. Received: nprobe=0"):
        IvfPqConfig(nprobe=0)
    with pytest.raises(ValueError, match="`rerank_dtype` must be one of"):
        IvfPqConfig(rerank_dtype="int4")
    with pytest.raises(ValueError, match="`m` must divide the embeddings' dim 48. Received: m=5"):
        IvfPqIndex.build(np.ones((300, DIM), np.float32), config=IvfPqConfig(m=5, threads=1))
    with pytest.raises(ValueError, match="at least 256 rows"):
        IvfPqIndex.build(np.ones((100, DIM), np.float32), config=CONFIG)


def test_default_sizes():
    config = IvfPqConfig()
    assert config.lists_for(1_000_000) == 2048 and config.subquantizers(1280) == 64
    assert config.lists_for(100_000) == 512 and config.lists_for(1_000) == 31


def test_a_filter_on_a_region_of_the_space_still_recalls(data, queries):
    """A category owns whole clusters: the lists nearest a query of another category hold none of it."""
    centre = np.random.default_rng(0).integers(0, 60, N)  # the same draw clustered(N) made
    mask = centre % 5 == 0  # 12 of the 60 clusters, about 20% of the rows
    ivf = IvfPqIndex.build(data, "cosine", dataclasses.replace(CONFIG, nlist=64, nprobe=2, rerank_dtype="float16"))
    got, truth = ivf.search(queries, K, mask=mask), Index(data, "cosine").search(queries, K, mask=mask)
    assert mask[got.rows].all()
    # Widening nprobe by the filter's share instead (2 -> 10 of 64 lists) recalled 0.93 here.
    assert recall(got.rows, truth.rows) >= 0.95


def test_refining_on_the_store_rows_scores_exactly(tmp_path, data, queries):
    ivf = IvfPqIndex.build(data, "euclidean", CONFIG)  # sq8 re-rank vectors: close, not exact
    ivf.save(tmp_path / "ivf")
    refined = IvfPqIndex.load(tmp_path / "ivf", data, refine=True)
    truth = Index(data, "euclidean").search(queries, K)
    plain, got = ivf.search(queries, K, nprobe=16), refined.search(queries, K, nprobe=16)
    assert not np.allclose(plain.scores, truth.scores, rtol=1e-5)
    assert recall(got.rows, truth.rows) == 1.0  # (in an order float rounding may swap on a near-tie)
    np.testing.assert_allclose(got.scores, truth.scores, rtol=1e-5)
    mask = np.random.default_rng(3).random(N) < 0.2
    got, truth = refined.search(queries, K, mask=mask, nprobe=16), Index(data, "euclidean").search(queries, K, mask=mask)
    assert recall(got.rows, truth.rows) == 1.0
    np.testing.assert_allclose(got.scores, truth.scores, rtol=1e-5)
