"""Clustering metrics: ACC (Hungarian), NMI, ARI, purity, confusion matrix.

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
