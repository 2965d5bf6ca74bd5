"""Leave-one-out retrieval quality: each labelled item queries all the others.

An item counts as relevant to a query when it shares the query's label. Reported per approach:
precision@k (mean fraction of relevant items among the top k), precision@1, and mAP@k, where
``AP@k = (1 / min(k, R)) * sum_i P@i * rel_i`` over the top k and R is the number of other items
with the query's label. Items with an empty label neither query nor count as relevant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imgsim.index.exact import Index, Metric

BLOCK = 512


def ranked_relevance(
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int,
    metric: Metric | str = Metric.COSINE,
    queries: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Relevance of each query's top ``k`` neighbours, itself excluded.

    Args:
        embeddings: ``(N, dim)``.
        labels: ``(N,)`` strings; empty means unlabelled.
        k: Depth of the ranking.
        metric: Distance used to rank.
        queries: Optional row indices that query (default: every labelled row).

    Returns:
        ``(relevance (Q, k) bool, n_relevant (Q,))``: whether each rank's item shares the
        query's label, and how many other items do.
    """
    labels = np.asarray(labels).astype(str)
    if k <= 0:
        raise ValueError(f"`k` must be >= 1. Received: k={k}")
    if len(labels) != len(embeddings):
        raise ValueError(f"`labels` ({len(labels)}) and `embeddings` ({len(embeddings)}) differ in length")
    if queries is None:  # unlabelled items cannot be judged: they leave the ranking entirely
        labelled = np.flatnonzero(labels != "")
        embeddings, labels = np.asarray(embeddings)[labelled], labels[labelled]
        queries = np.arange(len(labels))
    if len(queries) == 0:
        raise ValueError("no labelled items to evaluate")
    if len(embeddings) < 2:
        raise ValueError("need at least 2 items to evaluate")
    index = Index(embeddings, metric)
    _, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    relevance = np.zeros((len(queries), min(k, len(labels) - 1)), dtype=bool)
    for start in range(0, len(queries), BLOCK):
        block = queries[start:start + BLOCK]
        hits = index.search(np.asarray(embeddings)[block], k, exclude=block)
        relevance[start:start + len(block)] = codes[hits.rows] == codes[block][:, None]
    n_relevant = counts[codes[queries]] - 1
    return relevance, n_relevant


def metrics_from_relevance(relevance: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, float]:
    """precision@1, precision@k and mAP@k from :func:`ranked_relevance`'s output."""
    rel = relevance[:, :k].astype(np.float64)
    cumulative = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    precision_at_i = cumulative / ranks
    denom = np.minimum(k, n_relevant).astype(np.float64)
    ap = np.where(denom > 0, (precision_at_i * rel).sum(axis=1) / np.maximum(denom, 1), 0.0)
    return {
        "precision@1": float(rel[:, 0].mean()),
        f"precision@{k}": float(rel.sum(axis=1).mean() / k),
        f"map@{k}": float(ap.mean()),
    }


def curve_from_relevance(relevance: np.ndarray) -> list[float]:
    """precision@k for k = 1..depth from :func:`ranked_relevance`'s relevance matrix."""
    cumulative = np.cumsum(relevance, axis=1).mean(axis=0)
    return [float(c / (i + 1)) for i, c in enumerate(cumulative)]


def evaluate_embeddings(
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int = 10,
    metric: Metric | str = Metric.COSINE,
    queries: np.ndarray | None = None,
    curve_k: int = 0,
) -> dict[str, Any]:
    """Leave-one-out precision@1, precision@k and mAP@k of an embedding matrix.

    With ``curve_k`` > 0 the result also holds ``curve``: precision@1..curve_k, taken from the
    same ranking (ranked once, to the deeper of ``k`` and ``curve_k``).
    """
    relevance, n_relevant = ranked_relevance(embeddings, labels, max(k, curve_k), metric, queries)
    scores: dict[str, Any] = metrics_from_relevance(relevance, n_relevant, k)
    if curve_k:
        scores["curve"] = curve_from_relevance(relevance[:, :curve_k])
    return scores


def chance_precision(labels: np.ndarray) -> float:
    """Expected precision of a random ranking: sum over labels of p_c * (n_c - 1) / (N - 1)."""
    labels = np.asarray(labels).astype(str)
    labelled = labels[labels != ""]
    _, counts = np.unique(labelled, return_counts=True)
    n = len(labels)
    return float((counts * (counts - 1)).sum() / (len(labelled) * (n - 1))) if n > 1 else 0.0
