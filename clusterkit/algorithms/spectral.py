"""Sparse spectral building blocks shared by the spectral baseline and SA-Net.

Memory stays O(N * neighbours): the affinity is a sparse kNN graph, the Laplacian is sparse, and the
eigenvectors come from an iterative sparse solver (never a dense N x N matrix).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh

from clusterkit.algorithms.neighbors import Backend, knn
from clusterkit.errors import InputError


def knn_affinity(
    x: np.ndarray, n_neighbors: int = 10, backend: Backend = "auto", scale_neighbor: int = 7
) -> sp.csr_matrix:
    """Symmetric kNN graph with self-tuning Gaussian weights (Zelnik-Manor & Perona, 2004).

    w_ij = exp(-d_ij^2 / (s_i s_j)), s_i the distance to i's `scale_neighbor`-th neighbour, so that
    the bandwidth adapts to local density without a global parameter.
    """
    dist, idx = knn(x, n_neighbors, backend)
    return affinity_from_neighbors(dist, idx, scale_neighbor)


def affinity_from_neighbors(dist: np.ndarray, idx: np.ndarray, scale_neighbor: int = 7) -> sp.csr_matrix:
    """Self-tuning affinity from precomputed neighbour lists (distances ascending per row)."""
    n, k = idx.shape
    scale = dist[:, min(scale_neighbor, k) - 1].astype(np.float64)
    scale = np.maximum(scale, np.finfo(np.float64).eps)
    weights = np.exp(-(dist.astype(np.float64) ** 2) / (scale[:, None] * scale[idx]))
    graph = sp.csr_matrix((weights.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    return graph.maximum(graph.T).tocsr()


def normalized_laplacian(affinity: sp.spmatrix) -> sp.csr_matrix:
    """L_sym = I - D^-1/2 W D^-1/2."""
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, np.finfo(np.float64).tiny))
    d = sp.diags(inv_sqrt)
    return (sp.identity(affinity.shape[0], format="csr") - d @ affinity @ d).tocsr()


DENSE_COMPONENT = 256  # components this small are solved densely (a few hundred KiB at most)


def spectral_embedding(affinity: sp.spmatrix, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The `n_components` eigenvectors of L_sym with smallest eigenvalues, and those eigenvalues.

    A kNN graph is often disconnected, and then eigenvalue 0 is repeated once per component, which a
    single-vector Krylov solver does not resolve reliably. L_sym is block-diagonal over connected
    components, so each component is solved on its own and the spectra are merged: exact, and no
    larger than the largest component.
    """
    from scipy.sparse.csgraph import connected_components

    affinity = sp.csr_matrix(affinity)
    n = affinity.shape[0]
    n_components = min(n_components, n)
    count, component = connected_components(affinity, directed=False)
    values, owners, vectors = [], [], []
    for c in range(count):
        members = np.flatnonzero(component == c)
        vals, vecs = _smallest_eigenpairs(affinity[members][:, members], n_components, seed)
        values.extend(vals)
        owners.extend([members] * len(vals))
        vectors.extend(vecs.T)
    order = np.argsort(values, kind="stable")[:n_components]
    embedding = np.zeros((n, len(order)))
    for column, i in enumerate(order):
        embedding[owners[i], column] = vectors[i]
    return embedding, np.clip(np.asarray(values)[order], 0.0, 2.0)


def _smallest_eigenpairs(affinity: sp.csr_matrix, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest eigenpairs of L_sym of one connected graph, ascending.

    Solved as the largest of 2I - L_sym = I + D^-1/2 W D^-1/2 (spectrum in [0, 2]): Lanczos converges
    fast at that end and needs no factorization, unlike shift-invert on L itself.
    """
    n = affinity.shape[0]
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, np.finfo(np.float64).tiny))
    d = sp.diags(inv_sqrt)
    shifted = (sp.identity(n, format="csr") + d @ affinity @ d).tocsr()
    if n <= DENSE_COMPONENT or count >= n - 1:
        values, vectors = np.linalg.eigh(shifted.toarray())
        values, vectors = values[::-1][:count], vectors[:, ::-1][:, :count]
    else:
        v0 = np.random.default_rng(seed).uniform(-1, 1, n)
        ncv = min(n, max(2 * count + 1, 20))
        values, vectors = eigsh(shifted, k=count, which="LA", v0=v0, ncv=ncv, tol=1e-8, maxiter=n * 20)
        order = np.argsort(-values)
        values, vectors = values[order], vectors[:, order]
    return 2.0 - values, vectors


def embed_for_clustering(vectors: np.ndarray, n_clusters: int) -> np.ndarray:
    """First `n_clusters` eigenvectors with rows scaled to unit length (Ng, Jordan & Weiss, 2002)."""
    u = vectors[:, :n_clusters]
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    return u / np.maximum(norms, 1e-12)


def partition(
    vectors: np.ndarray, n_clusters: int, n_init: int, seed: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """The spectral partition: k-means with `n_init` restarts on the row-normalized first
    `n_clusters` eigenvectors (Ng, Jordan & Weiss, 2002); `weights` count the images a node stands for."""
    from sklearn.cluster import KMeans

    embedding = embed_for_clustering(vectors, n_clusters)
    kmeans = KMeans(n_clusters, n_init=n_init, random_state=seed)
    return kmeans.fit_predict(embedding, sample_weight=weights).astype(np.int64)


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, copy_of, counts): the index of each distinct row's first occurrence, in input order; for
    every row, the position of its distinct row in `first`; and how many rows each distinct row stands for.

    Graph clustering runs on distinct images: more copies of one image than a node's neighbours form a
    clique of their own, which the spectral partition may cut in two, so identical images would land
    in different clusters.
    """
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    _, first, inverse, counts = np.unique(flat, axis=0, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()], counts[order]


AUTO_K_MIN_IMAGES = 4  # the eigengap among k = 2.. needs the first k_min + 2 = 4 eigenvalues


def check_distinct(k: int | str, n_distinct: int) -> None:
    """Refuse, before any work, a k that the distinct images cannot fill (a given k is named first:
    it says what to change)."""
    if k != "auto" and k > n_distinct:
        raise InputError(f"--k {k} is larger than the number of distinct images ({n_distinct})")
    if n_distinct < 2:
        raise InputError("the images are all alike: there is nothing to cluster")
    if k == "auto" and n_distinct < AUTO_K_MIN_IMAGES:
        raise InputError(f"--k auto needs at least {AUTO_K_MIN_IMAGES} images that differ, to choose k by the eigengap")


def spectral_partition(
    affinity: sp.spmatrix, k: int | str, k_max: int, n_init: int, seed: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, int, np.ndarray]:
    """(labels, k, eigenvalues) of the graph's spectral clustering; k='auto' picks k by the eigengap
    among 2..k_max. The nodes are distinct images (see `distinct_rows`), counted by `weights`."""
    n = affinity.shape[0]
    n_eig = min(k_max, n - 2) + 1 if k == "auto" else k
    vectors, values = spectral_embedding(affinity, n_eig, seed=seed)
    if k == "auto":
        k = eigengap_k(values, 2, len(values) - 1)
    return partition(vectors, int(k), n_init, seed, weights), int(k), values


def _cut_terms(
    affinity: sp.csr_matrix, degree: np.ndarray, labels: np.ndarray, n_clusters: int
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, float]:
    """Cluster indicator H, volumes vol(C), inner links links(C, C), and the normalized cut
    Σ_C cut(C, rest) / vol(C) = Σ_C 1 − links(C, C) / vol(C); an empty cluster counts 1."""
    n = len(labels)
    h = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, n_clusters))
    volume = h.T @ degree
    within = (h.T @ affinity @ h).diagonal()
    return h, volume, within, float(np.sum(1.0 - within / np.maximum(volume, np.finfo(np.float64).tiny)))


def _degree(affinity: sp.csr_matrix) -> np.ndarray:
    return np.maximum(np.asarray(affinity.sum(axis=1)).ravel(), np.finfo(np.float64).tiny)


def normalized_cut(affinity: sp.spmatrix, labels: np.ndarray, n_clusters: int) -> float:
    """Sum over clusters of cut(C, rest) / vol(C) (Shi & Malik 2000): the discrete objective whose
    relaxation the spectral embedding solves. An empty cluster counts 1, as if it were cut off whole."""
    affinity = sp.csr_matrix(affinity)
    return _cut_terms(affinity, _degree(affinity), labels, n_clusters)[3]


def refine_cut(affinity: sp.spmatrix, labels: np.ndarray, n_clusters: int, max_iter: int = 100) -> np.ndarray:
    """The partition after local search on its normalized cut, started from `labels`.

    k-means on the spectral embedding rounds the relaxed problem's solution, and the rounding is not
    optimal for the discrete cut. Weighted kernel k-means with kernel D^-1 W D^-1 and node weights d
    has the normalized cut as its objective (Dhillon, Guan & Kulis, 2004, 2007): a node's distance
    to cluster C is, up to a constant, links(C, C) / vol(C)^2 - 2 links(i, C) / (d_i vol(C)). All
    nodes move to their nearest cluster at once; a move is kept only while it lowers the cut and
    empties no cluster, so the result is never worse than its start. Costs O(nnz(W) k) per step.
    Each node counts once here, also where it stands for several copies (`distinct_rows`).
    """
    affinity = sp.csr_matrix(affinity)
    degree = _degree(affinity)
    h, volume, within, cut = _cut_terms(affinity, degree, labels, n_clusters)
    for _ in range(max_iter):
        links = np.asarray((affinity @ h).todense())
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = within / volume**2 - 2.0 * links / (degree[:, None] * volume)
        distance[:, volume == 0] = np.inf  # an empty cluster takes no node (and stays empty)
        moved = distance.argmin(axis=1)
        if np.array_equal(moved, labels) or len(np.unique(moved)) < len(np.unique(labels)):
            break
        terms = _cut_terms(affinity, degree, moved, n_clusters)
        if terms[3] >= cut:
            break
        labels, (h, volume, within, cut) = moved, terms
    return labels


def relaxed_cut(eigenvalues: np.ndarray, n_clusters: int) -> float:
    """Mean of the `n_clusters` smallest eigenvalues of L_sym: the relaxed normalized cut of the best
    k-way partition (von Luxburg 2007, sec. 5), low when the graph falls into k loosely joined groups.
    Comparable across kNN graphs of the same images and degree, so it can choose between
    representations, as Ng, Jordan & Weiss (2002) choose the affinity's scale by the tightest clusters."""
    return float(np.mean(np.sort(eigenvalues)[:n_clusters]))


def eigengap_k(eigenvalues: np.ndarray, k_min: int = 2, k_max: int | None = None) -> int:
    """k with the largest gap lambda_{k+1} - lambda_k among the smallest Laplacian eigenvalues."""
    values = np.sort(eigenvalues)
    k_max = min(k_max or len(values) - 1, len(values) - 1)
    if k_max < k_min:
        raise InputError(f"--k auto needs at least {k_min + 2} images to choose k by the eigengap")
    gaps = np.diff(values)[k_min - 1 : k_max]
    return int(k_min + np.argmax(gaps))


def neighbor_vote(dist: np.ndarray, idx: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Out-of-sample extension of a graph clustering: soft votes of each query's nearest training points.

    Weights exp(-(d / d_last)^2) fade with distance relative to the query's own farthest voter; a query
    at distance 0 from a training point takes that point's cluster, so assigning the training set again
    reproduces the fitted partition. Returns (Q, n_clusters) rows summing to one.
    """
    scale = np.maximum(dist[:, -1:], 1e-12)
    weights = np.exp(-((dist / scale) ** 2))
    votes = np.zeros((len(idx), n_clusters), dtype=np.float64)
    np.add.at(votes, (np.repeat(np.arange(len(idx)), idx.shape[1]), labels[idx].ravel()), weights.ravel())
    exact = dist[:, 0] <= 1e-6
    votes[exact] = 0.0
    votes[exact, labels[idx[exact, 0]]] = 1.0
    return (votes / votes.sum(axis=1, keepdims=True)).astype(np.float32)
