"""Exact k-NN against a brute-force argsort oracle."""

import numpy as np
import pytest

from imgsim.index.exact import Index


def oracle(matrix, query, k, metric, mask=None, exclude=None):
    if metric == "cosine":
        m = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        score = m @ (query / np.linalg.norm(query))
    else:
        score = -((matrix - query) ** 2).sum(axis=1)
    eligible = np.ones(len(matrix), bool) if mask is None else mask.copy()
    if exclude is not None:
        eligible[exclude] = False
    rows = np.flatnonzero(eligible)
    order = rows[np.argsort(-score[rows], kind="stable")]
    return order[:k]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5, 50, 200, 300])
def test_matches_argsort_oracle(metric, k):
    rng = np.random.default_rng(k)
    matrix = rng.normal(size=(200, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    hits = Index(matrix, metric).search(queries, k)
    assert hits.rows.shape == (7, min(k, 200))
    for q in range(7):
        np.testing.assert_array_equal(hits.rows[q], oracle(matrix, queries[q], k, metric))


def test_ties_go_to_the_lower_row():
    matrix = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]], np.float32)
    hits = Index(matrix).search(np.array([1, 0], np.float32), 2)
    np.testing.assert_array_equal(hits.rows[0], [0, 2])
    hits = Index(matrix).search(np.array([1, 0], np.float32), 4)
    np.testing.assert_array_equal(hits.rows[0], [0, 2, 3, 1])


def test_mask_and_exclude():
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(50, 8)).astype(np.float32)
    mask = np.zeros(50, bool)
    mask[::3] = True
    hits = Index(matrix).search(matrix[[0, 3]], 100, mask=mask, exclude=[0, 3])
    assert hits.rows.shape == (2, mask.sum() - 1)
    assert 0 not in hits.rows[0] and 3 not in hits.rows[1]
    for q, row in enumerate([0, 3]):
        np.testing.assert_array_equal(hits.rows[q], oracle(matrix, matrix[row], 100, "cosine", mask, row))


def test_scores_are_cosine_or_distance():
    matrix = np.array([[3, 4], [0, 2]], np.float32)
    cos = Index(matrix, "cosine").search(np.array([3, 4], np.float32), 2)
    np.testing.assert_allclose(cos.scores[0], [1.0, 0.8], atol=1e-6)
    euc = Index(matrix, "euclidean").search(np.array([0, 0], np.float32), 2)
    np.testing.assert_allclose(euc.scores[0], [2.0, 5.0], atol=1e-5)
    np.testing.assert_array_equal(euc.rows[0], [1, 0])


def test_misuse_is_refused():
    index = Index(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="k"):
        index.search(np.ones(3), 0)
    with pytest.raises(ValueError, match="dim 3"):
        index.search(np.ones(4), 1)
    with pytest.raises(ValueError, match="mask"):
        index.search(np.ones(3), 1, mask=np.ones(2, bool))
