"""Planning the refill of clusters that self-training has emptied (`nn.heads.split_linear_head`
carries a plan out through a linear head).

Self-training sharpens a network's own predictions, and a cluster can lose its last image for
good; the model then gives fewer clusters than were asked for. DeepCluster (Caron et al., ECCV
2018, sec. 3.3) meets this by giving the empty cluster a slightly perturbed copy of a non-empty
cluster's centroid and splitting that cluster's images between the two. Here the cluster split is
the largest (bisecting k-means' `largest_cluster` strategy), by 2-means on the features that the
clustering head reads, and the perturbation points from one half's centroid to the other's, so
the split is deterministic and is the 2-means split exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Cluster `donor`'s images `moved` go to the empty cluster `empty`. They are the features z
    with normal·z + offset > 0: the side of the 2-means bisecting hyperplane nearer their centroid."""

    empty: int
    donor: int
    moved: np.ndarray
    normal: np.ndarray
    offset: float


def plan_splits(labels: np.ndarray, features: np.ndarray, k: int, seed: int, n_init: int = 10) -> list[Split]:
    """One split per empty cluster of `labels`, each of the largest cluster at that point; the
    smaller 2-means half moves. An empty cluster stays empty when no cluster holds two distinct features."""
    from sklearn.cluster import KMeans

    labels = np.asarray(labels).copy()
    splits: list[Split] = []
    for empty in np.flatnonzero(np.bincount(labels, minlength=k) == 0):
        for donor in np.argsort(-np.bincount(labels, minlength=k), kind="stable"):
            members = np.flatnonzero(labels == donor)
            if len(np.unique(features[members], axis=0)) >= 2:
                break
        else:
            break
        kmeans = KMeans(2, n_init=n_init, random_state=seed).fit(features[members])
        mover = int(np.argmin(np.bincount(kmeans.labels_, minlength=2)))
        toward, away = kmeans.cluster_centers_[mover], kmeans.cluster_centers_[1 - mover]
        normal = toward - away
        splits.append(
            Split(
                int(empty), int(donor), members[kmeans.labels_ == mover], normal, float(-normal @ (toward + away) / 2)
            )
        )
        labels[splits[-1].moved] = empty
    return splits
