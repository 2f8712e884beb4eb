"""Refilling clusters that self-training has emptied.

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
import torch
from torch import nn


@dataclass(frozen=True)
class Split:
    """Cluster `split`'s images `moved` go to the empty cluster `empty`. They are the features z
    with normal·z + offset > 0: the side of the 2-means bisecting hyperplane nearer their centroid."""

    empty: int
    split: int
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
        for split in np.argsort(-np.bincount(labels, minlength=k), kind="stable"):
            members = np.flatnonzero(labels == split)
            if len(np.unique(features[members], axis=0)) >= 2:
                break
        else:
            break
        kmeans = KMeans(2, n_init=n_init, random_state=seed).fit(features[members])
        mover = int(np.argmin(np.bincount(kmeans.labels_, minlength=2)))
        toward, away = kmeans.cluster_centers_[mover], kmeans.cluster_centers_[1 - mover]
        normal = toward - away
        splits.append(Split(int(empty), int(split), members[kmeans.labels_ == mover], normal,
                            float(-normal @ (toward + away) / 2)))
        labels[splits[-1].moved] = empty
    return splits


@torch.no_grad()
def split_linear_head(head: nn.Linear, split: Split, features: torch.Tensor) -> None:
    """Row `empty` of a linear softmax head := row `split` + ε(normal, offset). Among the split
    cluster's images the argmax then follows the 2-means split; ε keeps every other image's argmax
    (half its smallest margin to the split cluster) and changes no logit by more than 1."""
    features = features.double()
    weight, bias = head.weight.detach().double().cpu(), head.bias.detach().double().cpu()
    logits = features @ weight.T + bias
    side = features @ torch.from_numpy(split.normal).double() + split.offset
    members = torch.zeros(len(features), dtype=torch.bool)
    members[torch.from_numpy(np.flatnonzero(logits.argmax(dim=1).numpy() == split.split))] = True
    others = ~members & (side > 0)
    margin = logits[others].max(dim=1).values - logits[others, split.split]
    epsilon = min(1.0 / float(side.abs().max().clamp_min(1e-12)),
                  0.5 * float((margin / side[others]).min()) if bool(others.any()) else float("inf"))
    head.weight[split.empty] = (weight[split.split] + epsilon * torch.from_numpy(split.normal)).to(head.weight)
    head.bias[split.empty] = (bias[split.split] + epsilon * split.offset).to(head.bias)
