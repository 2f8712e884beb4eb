"""Metrics against small cases computed by hand."""

import numpy as np
import pytest

from clusterkit.metrics import ari, cluster_acc, confusion, evaluate, nmi, purity


def test_acc_is_invariant_to_cluster_renaming():
    assert cluster_acc(["a", "a", "b", "b"], [7, 7, 3, 3]) == 1.0


def test_acc_hand_computed():
    # clusters {0: a,a,b} {1: b,c,c}: best matching 0->a (2), 1->c (2) => 4/6
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = [0, 0, 0, 1, 1, 1]
    assert cluster_acc(y_true, y_pred) == pytest.approx(4 / 6)


def test_acc_with_more_clusters_than_classes_counts_unmatched_as_wrong():
    # 3 clusters, 2 classes: only two clusters can be matched; the third's images count as errors
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [0, 0, 2, 1, 1, 1]
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 6)
    assert purity(y_true, y_pred) == 1.0


def test_acc_with_fewer_clusters_than_classes():
    y_true = [0, 1, 2, 0, 1, 2]
    y_pred = [0, 0, 0, 1, 1, 1]
    # best: one cluster per class for two classes, one image each => 2/6
    assert cluster_acc(y_true, y_pred) == pytest.approx(2 / 6)


def test_confusion_axes_and_counts():
    table, clusters, classes = confusion(["x", "y", "y"], [1, 1, 0])
    assert clusters == [0, 1] and classes == ["x", "y"]
    np.testing.assert_array_equal(table, [[0, 1], [1, 1]])


def test_nmi_ari_perfect_and_independent():
    assert nmi([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert ari([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    # perfectly independent partitions: no shared information
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)


def test_ari_hand_computed():
    # contingency [[2,0],[1,1]] for y_true=[a,a,b,b], y_pred=[0,0,0,1]
    # sum C(n_ij,2)=1, rows C(3,2)+C(1,2)=3, cols C(2,2)*2=2, C(4,2)=6
    # expected=3*2/6=1, max=(3+2)/2=2.5, ARI=(1-1)/(2.5-1)=0
    assert ari(["a", "a", "b", "b"], [0, 0, 0, 1]) == pytest.approx(0.0)


def test_evaluate_keys():
    result = evaluate(["a", "b"], [0, 1])
    assert set(result) == {"acc", "nmi", "ari", "purity", "n", "k_pred", "k_true"}
    assert result["n"] == 2 and result["k_pred"] == 2 and result["k_true"] == 2
