"""k-nearest neighbours behind one interface: FAISS when installed (large sets), scikit-learn otherwise."""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np

from clusterkit.errors import InputError

Backend = Literal["auto", "sklearn", "faiss"]


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _resolve(backend: Backend) -> str:
    if backend == "auto":
        return "faiss" if faiss_available() else "sklearn"
    if backend == "faiss" and not faiss_available():
        raise InputError("the faiss backend needs FAISS: pip install 'clusterkit[faiss]'")
    return backend


def knn_query(
    data: np.ndarray, queries: np.ndarray, n_neighbors: int, backend: Backend = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distances and indices (both (Q, n_neighbors), nearest first) of `queries` in `data`."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n_neighbors = min(n_neighbors, len(data))
    if _resolve(backend) == "faiss":
        import faiss

        index = faiss.IndexFlatL2(data.shape[1])
        index.add(data)
        _, idx = index.search(queries, n_neighbors)
    else:
        from sklearn.neighbors import NearestNeighbors

        _, idx = NearestNeighbors(n_neighbors=n_neighbors).fit(data).kneighbors(queries)
    return _exact_distances(data, queries, idx.astype(np.int64))


EXACT_CHUNK = 1 << 22  # floats of query-neighbour differences per chunk (16 MB)


def _exact_distances(data: np.ndarray, queries: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances of the found neighbours from direct differences, rows re-sorted.

    Both backends' searches expand |q - x|^2 = |q|^2 + |x|^2 - 2 q.x, whose round-off leaves an image's distance
    to its own copy at up to ~1e-5 rather than 0; the out-of-sample votes rely on an exact 0 to give
    a training image its own cluster."""
    dist = np.empty(idx.shape, dtype=np.float32)
    rows = max(1, EXACT_CHUNK // max(1, idx.shape[1] * data.shape[1]))
    for start in range(0, len(idx), rows):
        block = idx[start : start + rows]
        diff = data[block] - queries[start : start + rows, None, :]
        dist[start : start + rows] = np.sqrt(np.einsum("qnd,qnd->qn", diff, diff))
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)


def knn(x: np.ndarray, n_neighbors: int, backend: Backend = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Each point's `n_neighbors` nearest other points (self excluded): distances and indices (N, n)."""
    dist, idx = knn_query(x, x, n_neighbors + 1, backend)
    # Drop self; with duplicate points self may not come first, so remove it by identity.
    rows = np.arange(len(x))[:, None]
    not_self = idx != rows
    # keep the first n_neighbors entries that are not the point itself
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :n_neighbors]
    return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)
