"""Agglomerative clustering via maximum incremental path integral (AC-PIC; Zhang, Zhao and Wang,
Pattern Recognition 2013), the initialiser DEPICT's released code uses on its digit data sets.

A kNN digraph with Gaussian weights (K=20, a=1) becomes a random walk P; the path integral of a
cluster C is S_C = 1ᵀ(I − zP_C)⁻¹1 / |C|² (z=0.01), the mass of walks that stay inside C. Starting
from the components of the 1-nearest-neighbour graph (from single images when those are fewer than
k), the pair of clusters whose union gains the most path integral, S_{Ci|Ci∪Cj} + S_{Cj|Ci∪Cj} −
S_Ci − S_Cj, is merged until k remain.

Unlike the released code (dense inverses of every pair), this version stays sparse: only
clusters joined by a graph edge can gain, and since ‖zP‖ = z, (I − zP_U)⁻¹y is its Neumann series
Σ_t (zP_U)^t y, summed until the terms vanish, using the N×(K+1) neighbour lists alone.
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from clusterkit.algorithms.neighbors import knn

_TOL = 1e-13


class _Walk:
    """Row-stochastic kNN transition matrix as neighbour lists, restricted to subsets on demand."""

    def __init__(self, x: np.ndarray, n_neighbors: int, a: float, z: float) -> None:
        n = len(x)
        dist, idx = knn(x, n_neighbors)
        d2 = dist.astype(np.float64) ** 2
        sigma2 = d2[:, : max(n_neighbors, 3)].mean() * a
        while np.any(np.exp(-d2[:, 0] / sigma2) < 1e-5):  # widen until every nearest neighbour counts
            sigma2 *= 2
        weights = np.concatenate([np.ones((n, 1)), np.exp(-d2 / sigma2)], axis=1)  # self-loop first
        self.cols = np.concatenate([np.arange(n)[:, None], idx], axis=1)
        self.probs = z * weights / weights.sum(axis=1, keepdims=True)
        self.nearest = idx[:, 0]
        self._buffer = np.zeros((n, 2))

    def solve(self, members: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(I − zP_U)⁻¹ y for the subset U = members, y of shape (|U|, 2)."""
        cols, probs = self.cols[members], self.probs[members]
        total, term = y.copy(), y
        while np.abs(term).max() > _TOL:
            self._buffer[members] = term
            term = np.einsum("uk,ukc->uc", probs, self._buffer[cols])
            total += term
        self._buffer[members] = 0.0
        return total


class PathIntegralClustering:
    """AC-PIC on the rows of `x` into k clusters (defaults: those of the released DEPICT code).

    The graph, the starting clusters and their merge gains are built once; `merge` runs the
    agglomeration on copies of them, so several runs (other `min_size`) share that work.
    """

    def __init__(self, x: np.ndarray, k: int, n_neighbors: int = 20, a: float = 1.0, z: float = 0.01) -> None:
        n = len(x)
        self.k = k
        self.walk = _Walk(np.asarray(x, dtype=np.float32), min(n_neighbors, n - 1), a, z)
        links = csr_matrix((np.ones(n), (np.arange(n), self.walk.nearest)), shape=(n, n))
        pieces, member = connected_components(links, directed=False)
        if pieces < k:  # each piece holds two images or more (k > n/2 always asks for more): start from single images
            member = np.arange(n)
        # Clusters are candidates for a merge when a kNN edge joins them in either direction.
        cols = self.walk.cols
        edges = csr_matrix((np.ones(cols.size), (np.repeat(np.arange(n), cols.shape[1]), cols.ravel())), shape=(n, n))
        self.edges = (edges + edges.T).tocsr()
        self.member = member
        self.clusters = {c: np.flatnonzero(member == c) for c in range(member.max() + 1)}
        self.own = {c: self._integral(members) for c, members in self.clusters.items()}
        self.heap = [
            (-self._gain(self.clusters, self.own, i, j), i, j)
            for i in self.clusters
            for j in self._linked(self.member, self.clusters, i)
            if i < j
        ]
        heapq.heapify(self.heap)

    def _integral(self, c: np.ndarray) -> float:
        return self.walk.solve(c, np.ones((len(c), 2)))[:, 0].sum() / len(c) ** 2

    def _gain(self, clusters: dict[int, np.ndarray], own: dict[int, float], i: int, j: int) -> float:
        ci, cj = clusters[i], clusters[j]
        y = np.zeros((len(ci) + len(cj), 2))
        y[: len(ci), 0] = 1.0
        y[len(ci) :, 1] = 1.0
        s = self.walk.solve(np.concatenate([ci, cj]), y)
        return s[: len(ci), 0].sum() / len(ci) ** 2 + s[len(ci) :, 1].sum() / len(cj) ** 2 - own[i] - own[j]

    def _linked(self, member: np.ndarray, clusters: dict[int, np.ndarray], c: int) -> set[int]:
        return set(member[self.edges[clusters[c]].indices].tolist()) - {c}

    def merge(self, min_size: int = 1) -> np.ndarray:
        """Cluster labels 0..k-1, merged from the starting clusters.

        `min_size` > 1 folds outlier groups in: two clusters of `min_size` images or more are not
        merged while k or fewer of those exist, so the merging goes on through the smaller ones, which
        join neighbours by the same gain. Where fewer than k clusters can reach `min_size`, some small
        ones stay among the k. 1 is plain AC-PIC.
        """
        min_size, k = int(min_size), self.k
        member, clusters, own, heap = self.member.copy(), dict(self.clusters), dict(self.own), list(self.heap)
        deferred: list[tuple[float, int, int]] = []  # merges of two full-sized clusters held back

        def full(c: int) -> bool:
            return bool(len(clusters[c]) >= min_size)

        n_full = sum(full(c) for c in clusters)
        next_id = len(clusters)
        while len(clusters) > k:
            if heap:
                pair = heapq.heappop(heap)
                _, i, j = pair
                if i not in clusters or j not in clusters:
                    continue  # stale: one side was merged already
                if n_full <= k and full(i) and full(j):
                    deferred.append(pair)
                    continue
            else:  # the graph fell apart into more than k pieces: join the two smallest
                i, j = sorted(clusters, key=lambda c: len(clusters[c]))[:2]
            n_full -= full(i) + full(j)
            merged = np.concatenate([clusters.pop(i), clusters.pop(j)])
            clusters[next_id], member[merged], own[next_id] = merged, next_id, self._integral(merged)
            n_full += full(next_id)
            for other in self._linked(member, clusters, next_id):
                heapq.heappush(heap, (-self._gain(clusters, own, other, next_id), other, next_id))
            if n_full > k and deferred:  # two outlier groups grew into one more full cluster
                for pair in deferred:
                    heapq.heappush(heap, pair)
                deferred.clear()
            next_id += 1
        labels = np.empty(len(member), dtype=np.int64)
        for label, members in enumerate(clusters.values()):
            labels[members] = label
        return labels


def path_integral_clustering(
    x: np.ndarray, k: int, n_neighbors: int = 20, a: float = 1.0, z: float = 0.01, min_size: int = 1
) -> np.ndarray:
    """Cluster labels 0..k-1 of the rows of `x` by AC-PIC (see `PathIntegralClustering.merge`)."""
    return PathIntegralClustering(x, k, n_neighbors, a, z).merge(min_size)
