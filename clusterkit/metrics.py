"""Clustering metrics: ACC (Hungarian), NMI, ARI, purity, confusion matrix; and, needing no labels,
the cluster sizes and the collapse they show (empty or giant clusters).

Labels may be any hashable values (strings from a CSV, ints from a model); clusters and classes
need not be equal in number. NMI uses scikit-learn's arithmetic-mean normalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def confusion(y_true: Sequence[Any], y_pred: Sequence[Any]) -> tuple[np.ndarray, list[Any], list[Any]]:
    """Counts (clusters x classes) and the sorted cluster and class values labelling its axes."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    classes, true_idx = np.unique(y_true, return_inverse=True)
    clusters, pred_idx = np.unique(y_pred, return_inverse=True)
    table = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(table, (pred_idx, true_idx), 1)
    return table, clusters.tolist(), classes.tolist()


def cluster_acc(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Fraction correct under the best one-to-one matching of clusters to classes.

    With more clusters than classes the unmatched clusters count as wrong (and vice versa), so ACC
    never rewards over-segmentation.
    """
    table, _, _ = confusion(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def purity(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Fraction of images in their cluster's majority class (many-to-one; rewards many clusters)."""
    table, _, _ = confusion(y_true, y_pred)
    return float(table.max(axis=1).sum() / table.sum())


def nmi(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    return float(normalized_mutual_info_score(np.asarray(y_true), np.asarray(y_pred)))


def ari(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    return float(adjusted_rand_score(np.asarray(y_true), np.asarray(y_pred)))


def label_scores(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, float]:
    """ACC, NMI and ARI: what metrics.json and the training history report beside a fit."""
    return {"acc": cluster_acc(y_true, y_pred), "nmi": nmi(y_true, y_pred), "ari": ari(y_true, y_pred)}


def evaluate(y_true: Sequence[Any], y_pred: Sequence[Any]) -> dict[str, Any]:
    """All scores of one assignment, as `evaluate --json` prints them."""
    return {
        **label_scores(y_true, y_pred),
        "purity": purity(y_true, y_pred),
        "n": len(y_true),
        "k_pred": len(set(np.asarray(y_pred).tolist())),
        "k_true": len(set(np.asarray(y_true).tolist())),
    }


# --- label-free: the sizes of the clusters ---------------------------------------------------
# A cluster is reported as collapse when it holds more than halfway from its fair share (1/k of the
# images) to all of them: 55% at k = 10, 75% at k = 2, where one cluster always holds at least half.
COLLAPSE_WAY = 0.5


def cluster_sizes(clusters: np.ndarray, k: int) -> list[int]:
    return np.bincount(clusters, minlength=k).astype(int).tolist()


def giant_cluster(sizes: list[int]) -> int | None:
    """The cluster holding more than halfway from its fair share to all the images, if one does."""
    total, fair = sum(sizes), 1.0 / len(sizes)
    largest = int(np.argmax(sizes))
    return largest if total and sizes[largest] > (fair + COLLAPSE_WAY * (1.0 - fair)) * total else None


def collapse_warning(sizes: list[int]) -> str | None:
    """Collapse is deep clustering's most common failure: empty clusters or one giant cluster."""
    empty = sum(1 for s in sizes if s == 0)
    if empty:
        return f"{empty} of {len(sizes)} clusters are empty (sizes {sizes})"
    giant = giant_cluster(sizes)
    if giant is not None:
        return f"one cluster holds {sizes[giant] / sum(sizes):.0%} of the images (sizes {sizes})"
    return None
