"""AC-PIC (clusterkit.algorithms.path_integral) on the built-in digits' pixels."""

from __future__ import annotations

import numpy as np
import pytest

from clusterkit.algorithms.path_integral import path_integral_clustering
from clusterkit.data import ImageSet, load_images
from clusterkit.metrics import cluster_acc


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    return load_images("builtin:digits")


def test_path_integral_clustering_beats_chance_on_pixels(digits):
    subset = digits.subset(np.arange(600))
    labels = path_integral_clustering(subset.flat(), 10)
    assert sorted(set(labels.tolist())) == list(range(10))
    assert cluster_acc(subset.labels, labels) > 0.7


def test_path_integral_clustering_gives_k_clusters_when_k_exceeds_the_nearest_neighbour_pieces(digits):
    """Every piece of the 1-NN graph holds two images or more: 30 images make at most 15 pieces."""
    labels = path_integral_clustering(digits.subset(range(30)).flat(), 20)
    assert sorted(set(labels.tolist())) == list(range(20))


def test_min_size_folds_outlier_groups_into_the_k_clusters(digits):
    """On the digits' pixels AC-PIC keeps a few look-alike images (27) as one of the 10 clusters;
    with min_size above that they join a neighbour, and here every cluster reaches min_size. A
    numpy integer (what np.bincount gives) counts the same: numpy booleans add as logical or."""
    x = digits.flat()
    plain = path_integral_clustering(x, 10)
    assert np.bincount(plain).min() < 30
    assert np.array_equal(path_integral_clustering(x, 10, min_size=1), plain)
    folded = path_integral_clustering(x, 10, min_size=30)
    assert sorted(set(folded.tolist())) == list(range(10))
    assert np.bincount(folded).min() >= 30
    assert np.array_equal(path_integral_clustering(x, 10, min_size=np.int64(30)), folded)
