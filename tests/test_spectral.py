"""Shared spectral module: sparse graph, Laplacian spectrum, eigengap."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from clusterkit.algorithms.neighbors import knn
from clusterkit.algorithms.spectral import (
    eigengap_k,
    knn_affinity,
    normalized_cut,
    normalized_laplacian,
    refine_cut,
    relaxed_cut,
    spectral_embedding,
)
from clusterkit.errors import InputError


def blobs(n_per=60, centers=((0, 0), (10, 0), (0, 10)), seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 0.5, size=(n_per, 2)) for c in centers]).astype(np.float32)


def test_knn_excludes_self_and_sorts():
    x = blobs()
    dist, idx = knn(x, 5, backend="sklearn")
    assert (idx != np.arange(len(x))[:, None]).all()
    assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_affinity_is_sparse_symmetric_and_linear_in_n():
    x = blobs()
    graph = knn_affinity(x, n_neighbors=8)
    assert graph.nnz <= len(x) * 8 * 2
    assert abs(graph - graph.T).max() < 1e-12
    assert graph.data.min() > 0 and graph.data.max() <= 1.0


def test_three_separated_blobs_give_three_zero_eigenvalues_and_eigengap_three():
    x = blobs()
    graph = knn_affinity(x, n_neighbors=8)
    vectors, values = spectral_embedding(graph, 6, seed=0)
    assert np.allclose(values[:3], 0.0, atol=1e-6) and values[3] > 1e-3
    assert eigengap_k(values, 2, 5) == 3
    laplacian = normalized_laplacian(graph)
    residual = laplacian @ vectors[:, :3]
    assert np.abs(residual).max() < 1e-5


def test_relaxed_cut_of_two_triangles_is_zero_for_two_groups_and_half_for_three():
    """Two disjoint triangles (K3): L_sym has eigenvalues 0, 0 and 3/2 four times (K_n: n / (n - 1)),
    so cutting into the two triangles is free and any third group costs 3/2: mean 0.5 over three."""
    triangle = np.ones((3, 3)) - np.eye(3)
    graph = sp.block_diag([triangle, triangle]).tocsr()
    _, values = spectral_embedding(graph, 4, seed=0)
    assert np.allclose(values, [0.0, 0.0, 1.5, 1.5], atol=1e-8)
    assert abs(relaxed_cut(values, 2)) < 1e-8
    assert abs(relaxed_cut(values, 3) - 0.5) < 1e-8
    assert relaxed_cut(values[::-1], 3) == relaxed_cut(values, 3)  # order does not matter


def test_assigning_the_training_photos_reproduces_the_spectral_fit():
    """Exact copies must be found at distance 0: the expanded-form search leaves ~1e-6 (photo crops)."""
    from clusterkit import get_method, load_images

    images = load_images("builtin:photo-crops")
    model = get_method("spectral", k=2, seed=0).fit(images)
    assert (model.predict(images) == model.labels_).all()


@pytest.mark.parametrize("method", ["spectral", "sanet"])
@pytest.mark.parametrize("index, k", [([0] * 30 + list(range(1, 8)), 8), ([0] * 10 + [1] * 10 + [2] * 10, 3)])
def test_copies_of_an_image_share_one_cluster_in_fit_and_assign(method, index, k):
    """Copies that outnumber a node's 10 neighbours formed a clique that the partition cut up (the
    30 copies went to 5 clusters) when k asked for more groups than the graph held."""
    from clusterkit import get_method, load_images

    images = load_images("builtin:digits").subset(index)
    model = get_method(method, k=k, seed=0, device="cpu").fit(images)
    labels = model.labels_
    assert len(labels) == len(images)
    for image in set(index):
        assert len(set(labels[np.asarray(index) == image])) == 1, labels
    assert (model.predict(images) == labels).all()


@pytest.mark.parametrize("method", ["spectral", "sanet", "kmeans", "gmm"])
def test_k_beyond_the_distinct_images_is_refused(method):
    from clusterkit import get_method, load_images

    digits = load_images("builtin:digits")
    images = digits.subset([0, 1, 2] * 5)
    with pytest.raises(InputError, match="larger than the number of distinct images"):
        get_method(method, k=4, seed=0, device="cpu").fit(images)


def two_triangles_joined_by_one_edge() -> sp.csr_matrix:
    edges = [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5), (2, 3)]
    rows, cols = zip(*edges, strict=True)
    w = sp.coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(6, 6))
    return (w + w.T).tocsr()


def test_normalized_cut_of_two_triangles_by_hand():
    """Each triangle has volume 2 + 2 + 3 = 7 and one edge leaving it: 1/7 + 1/7."""
    w = two_triangles_joined_by_one_edge()
    assert np.isclose(normalized_cut(w, np.array([0, 0, 0, 1, 1, 1]), 2), 2 / 7)
    # {0, 1} (volume 4, cut 2) and {2..5} (volume 10, cut 2): 2/4 + 2/10
    assert np.isclose(normalized_cut(w, np.array([0, 0, 1, 1, 1, 1]), 2), 0.5 + 0.2)
    assert np.isclose(normalized_cut(w, np.zeros(6, dtype=int), 2), 1.0)  # the empty cluster counts 1


def test_refining_moves_the_misplaced_node_and_never_raises_the_cut():
    w = two_triangles_joined_by_one_edge()
    assert refine_cut(w, np.array([0, 0, 1, 1, 1, 1]), 2).tolist() == [0, 0, 0, 1, 1, 1]
    x = blobs(n_per=40, centers=((0, 0), (2, 0), (0, 2)))
    affinity = knn_affinity(x, 10)
    start = np.random.default_rng(0).integers(0, 3, len(x))
    refined = refine_cut(affinity, start, 3)
    assert normalized_cut(affinity, refined, 3) < 0.5 * normalized_cut(affinity, start, 3)  # 2.02 -> 0.51
    assert len(np.unique(refined)) == 3
    # A cluster that starts empty stays empty, and the others are still refined.
    three = refine_cut(w, np.array([0, 0, 2, 2, 2, 2]), 3)
    assert three.tolist() == [0, 0, 0, 2, 2, 2]
