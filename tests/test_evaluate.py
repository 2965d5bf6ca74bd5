"""Leave-one-out metrics on data whose answer is known by construction."""

import numpy as np
import pytest

from imgsim.evaluate import chance_precision, evaluate_embeddings


def clusters(n_per=5, classes=4, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, 8) * 10
    x = np.concatenate([c + rng.normal(scale=noise, size=(n_per, 8)) for c in centres])
    labels = np.repeat([f"c{i}" for i in range(classes)], n_per)
    return x.astype(np.float32), labels


def test_perfect_clusters_score_one():
    x, labels = clusters()
    scores = evaluate_embeddings(x, labels, k=4)
    assert scores == {"precision@1": 1.0, "precision@4": 1.0, "map@4": 1.0}
    # beyond the 4 other members of a class, precision must drop: 4 of 8
    assert evaluate_embeddings(x, labels, k=8)["precision@8"] == pytest.approx(0.5)
    assert evaluate_embeddings(x, labels, k=8)["map@8"] == pytest.approx(1.0)


def test_known_mixed_ranking():
    # 1-D points: a a b a ; query 0's neighbours by distance: 1 (a), 2 (b), 3 (a)
    x = np.array([[0.0], [1.0], [2.0], [3.5]], np.float32)
    labels = np.array(["a", "a", "b", "a"])
    s = evaluate_embeddings(x, labels, k=3, metric="euclidean", queries=np.array([0]))
    assert s["precision@1"] == 1.0
    assert s["precision@3"] == pytest.approx(2 / 3)
    assert s["map@3"] == pytest.approx((1 + 2 / 3) / 2)


def test_unlabelled_items_do_not_query_and_chance():
    x, labels = clusters()
    labels = labels.astype(object)
    labels[0] = ""
    scores = evaluate_embeddings(x, labels.astype(str), k=1)
    assert scores["precision@1"] == 1.0
    assert chance_precision(np.array(["a", "a", "b", "b"])) == pytest.approx(1 / 3)
    curve = evaluate_embeddings(*clusters(), k=1, curve_k=6)["curve"]
    assert curve[:4] == [1.0] * 4 and curve[5] < 1.0
