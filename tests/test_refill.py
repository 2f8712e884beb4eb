"""Refilling emptied clusters (clusterkit.algorithms.refill): the largest is split by 2-means, and a
linear head's empty row takes one half (clusterkit.nn.heads)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clusterkit.algorithms.refill import plan_splits
from clusterkit.data import load_images
from clusterkit.metrics import cluster_acc
from clusterkit.nn.heads import predicted_clusters, split_linear_head


def _digits(*classes: int) -> tuple[np.ndarray, np.ndarray]:
    digits = load_images("builtin:digits")
    truth = np.asarray(digits.labels).astype(int)
    rows = np.flatnonzero(np.isin(truth, classes))
    return digits.pixels[rows].reshape(len(rows), -1).astype(np.float64), truth[rows]


def test_the_empty_cluster_takes_one_digit_of_a_merged_pair():
    x, truth = _digits(0, 1)
    (split,) = plan_splits(np.zeros(len(x), dtype=np.int64), x, k=2, seed=0)  # cluster 1 is empty
    assert (split.empty, split.donor) == (1, 0)
    labels = np.zeros(len(x), dtype=np.int64)
    labels[split.moved] = 1
    assert cluster_acc(truth, labels) > 0.95
    assert len(split.moved) <= len(x) // 2  # the smaller half moves
    assert np.array_equal(np.flatnonzero(x @ split.normal + split.offset > 0), split.moved)  # the 2-means side


def test_every_empty_cluster_is_refilled_from_the_largest_at_that_point():
    x, _ = _digits(0, 1, 2)
    labels = np.zeros(len(x), dtype=np.int64)
    splits = plan_splits(labels, x, k=4, seed=0)  # clusters 1-3 empty
    assert [s.empty for s in splits] == [1, 2, 3]
    sizes = np.array([len(x), 0, 0, 0])
    for s in splits:
        assert s.donor == int(np.argmax(sizes))
        assert len(s.moved) <= sizes[s.donor] // 2
        sizes[s.donor] -= len(s.moved)
        sizes[s.empty] = len(s.moved)


def test_no_split_without_an_empty_cluster_or_two_distinct_images():
    x, _ = _digits(0, 1)
    labels = np.zeros(len(x), dtype=np.int64)
    labels[0] = 1
    assert plan_splits(labels, x, k=2, seed=0) == []
    assert plan_splits(np.zeros(len(x), dtype=np.int64), np.repeat(x[:1], len(x), axis=0), k=2, seed=0) == []


def test_the_split_head_predicts_the_split_and_keeps_every_other_image():
    x, truth = _digits(0, 1, 2)
    features = torch.from_numpy(x)
    head = nn.Linear(x.shape[1], 3).double()
    with torch.no_grad():  # cluster 0: digits 0 and 1; cluster 1: digit 2; cluster 2: nothing
        head.weight[0] = features[truth != 2].mean(0)
        head.weight[1] = features[truth == 2].mean(0)
        head.weight[2] = -features.mean(0)
        head.bias.copy_(-0.5 * (head.weight**2).sum(1))  # nearest centroid
    before = features @ head.weight.T.detach() + head.bias.detach()
    assert set(before.argmax(1).tolist()) == {0, 1}
    (split,) = plan_splits(before.argmax(1).numpy(), x, k=3, seed=0)
    split_linear_head(head, split, features)
    with torch.no_grad():
        after = head(features)
    expected = before.argmax(1).clone()
    expected[torch.from_numpy(split.moved)] = 2
    assert torch.equal(after.argmax(1), expected)
    assert torch.allclose(after[:, :2], before[:, :2])
    assert float((after[:, 2] - before[:, 0]).abs().max()) <= 1.0 + 1e-9


def test_splits_in_a_row_on_a_float32_head_give_the_planned_clusters():
    x, truth = _digits(0, 1, 2, 3)
    features = torch.from_numpy(x).float()
    head = nn.Linear(x.shape[1], 5)  # float32, as DEPICT's; cluster 4 holds digit 3, clusters 1-3 are empty
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([1.0, -5.0, -5.0, -5.0, 0.0]))
        head.weight[4] = torch.from_numpy((truth == 3) * 1.0 @ x / (truth == 3).sum() - x.mean(0)).float() * 0.1
    labels = predicted_clusters(head, features)
    splits = plan_splits(labels, x, k=5, seed=0)
    assert [s.empty for s in splits] == [1, 2, 3]
    planned = labels.copy()
    for s in splits:
        assert split_linear_head(head, s, features) == len(s.moved)
        planned[s.moved] = s.empty
    assert np.array_equal(predicted_clusters(head, features), planned)
