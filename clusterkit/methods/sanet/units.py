"""One spectral-analysis unit: a kNN graph on patch vectors, its Laplacian eigenvectors, and a ridge
regression from patch to eigenvector coordinates (spectral regression, Cai, He & Han 2007).

The regression's columns are convolution filters: an explicit map that sends any patch, seen or not,
to the unit's spectral coordinates, so that the unit's analysis extends to every image in closed form.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.csgraph import connected_components

from clusterkit import console
from clusterkit.algorithms.neighbors import Backend
from clusterkit.algorithms.spectral import knn_affinity, spectral_embedding

FLAT_ENERGY = 0.01  # patches below this fraction of the mean patch energy carry no structure


def sample_patches(
    batches: Iterable[torch.Tensor], n_images: int, patch: int, n_patches: int, generator: torch.Generator
) -> torch.Tensor:
    """`n_patches` mean-removed patches (n, C*p*p) at random images and positions of the maps
    (N, C, H, W) of `n_images` images, which arrive in `batches`: only one batch of maps is held at a
    time, so a unit's memory does not grow with its subset of images or their size.

    Zero padding matches the padding of the convolution that later applies the filters. Flat patches
    (blank background, a uniform occluder) are dropped: they are identical after mean removal and
    would form one large clique in the patch graph without saying anything about shapes. Where the
    maps hold few positions (at most 4 x n_patches), positions are drawn without replacement: on a few
    small images, drawing with replacement takes each position many times over, and the copies'
    cliques split the patch graph into thousands of pieces that slow the eigen-solver down tenfold.
    Patches that are alike at different positions stay: dropping them cost the robust setting 0.03
    to 0.06 ACC on occluded digits (the occluder's edges are such patches).
    """
    r = patch // 2
    offsets = torch.arange(patch)
    parts, draws, start, drawn = [], [], 0, None
    for maps in batches:
        b, c, h, w = maps.shape
        if drawn is None:  # every map has the first one's size
            drawn = _draw_positions((n_images, h, w), n_patches, generator)
        img, ys, xs = drawn
        here = torch.nonzero((img >= start) & (img < start + b)).squeeze(1)
        img, ys, xs = img[here] - start, ys[here], xs[here]
        draws.append(here)
        padded = F.pad(maps, (r, r, r, r)).permute(0, 2, 3, 1)  # b, H+2r, W+2r, C
        windows = padded[
            img[:, None, None], ys[:, None, None] + offsets[None, :, None], xs[:, None, None] + offsets[None, None, :]
        ]  # n, p, p, C
        parts.append(windows.permute(0, 3, 1, 2).reshape(len(img), c * patch * patch))
        start += b
    vectors = torch.cat(parts)[torch.argsort(torch.cat(draws))]  # in the order drawn, whatever the batches
    vectors = vectors - vectors.mean(dim=1, keepdim=True)
    energy = vectors.pow(2).sum(dim=1)
    return vectors[energy > FLAT_ENERGY * energy.mean()]


def _draw_positions(shape: tuple[int, int, int], n_patches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """(image, row, column) of `n_patches` random positions in (N, H, W) maps: with replacement when
    there are many positions (repeats are then rare), else each position at most once."""
    positions = shape[0] * shape[1] * shape[2]
    if positions > 4 * n_patches:
        return [torch.randint(0, top, (n_patches,), generator=generator) for top in shape]
    flat = torch.randperm(positions, generator=generator)[:n_patches]
    return [flat // (shape[1] * shape[2]), flat // shape[2] % shape[1], flat % shape[2]]


def spectral_filters(
    patches: torch.Tensor, n_filters: int, n_neighbors: int, ridge: float, seed: int, backend: Backend
) -> torch.Tensor:
    """(n_filters, D) filters whose responses approximate the patch graph's first non-trivial eigenvectors.

    The eigenvectors are those of the generalized problem W y = lambda D y (D^-1/2 times the
    eigenvectors of L_sym), whose trivial solutions are dropped (`nontrivial_eigenvectors`). The ridge
    penalty is alpha = ridge x tr(P^T P) / D: `ridge` times the mean diagonal entry of the Gram matrix
    (the patch energy per dimension, summed over the n patches), so it scales with the data and does
    not depend on the intensity scale.
    Each filter is scaled to unit response variance on the unit's patches: eigenvectors have no
    natural scale, and equal scales keep one unit from dominating the next layer's distances.
    """
    x = patches.double().numpy()
    affinity = knn_affinity(x.astype(np.float32), n_neighbors, backend)
    vectors = nontrivial_eigenvectors(affinity, n_filters, seed)
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    targets = torch.from_numpy(vectors / np.sqrt(np.maximum(degree, 1e-12))[:, None])
    p = torch.from_numpy(x)
    gram = p.T @ p
    penalty = ridge * torch.trace(gram) / gram.shape[0]
    weights = torch.linalg.solve(gram + penalty * torch.eye(gram.shape[0], dtype=gram.dtype), p.T @ targets)
    weights = weights / (p @ weights).std(dim=0).clamp_min(1e-12)
    return weights.T.float().contiguous()


def nontrivial_eigenvectors(affinity: sp.spmatrix, count: int, seed: int) -> np.ndarray:
    """(n, count) eigenvectors of L_sym of the patch graph with the smallest eigenvalues, each
    connected component's trivial eigenvector left out.

    On a connected graph the trivial solution is the one eigenvector of eigenvalue 0, D^1/2 1 (the
    constant y = 1 of W y = lambda D y), and this is the first `count` eigenvectors after it. A
    graph of c components has eigenvalue 0 c times, and its eigenspace is spanned by the components'
    indicators (von Luxburg 2007, Prop. 4): taking "the next eigenvectors" after one of them would
    make c - 1 targets piecewise constant, equal on every patch of a component, and their filters
    would be linear discriminants between groups of patches (often an artefact of the sample: a far
    group, near-copies) rather than coordinates along the patches' graph. Every vector of that
    eigenspace is as trivial as the constant of a connected graph (zero Laplacian energy: it says
    which component a patch is in, nothing about how patches vary), so each component's eigenvalue-0
    vector is left out, and the `count` smallest non-trivial eigenpairs of all components are kept
    (each supported on its component, as Laplacian eigenmaps treat a disconnected graph: Belkin &
    Niyogi 2003 embed each component on its own). No threshold is involved: components are exact
    (edges of weight 0 do not connect). Connecting the graph instead (bridging edges between
    components) would not help: the self-tuning weight of an edge between far groups is about 0, so
    the second eigenvector would stay a near-indicator, and which edges to add would be arbitrary.
    On a connected graph the result is the old one, bit for bit.
    """
    graph = sp.csr_matrix(affinity, copy=True)
    graph.eliminate_zeros()
    n_parts, component = connected_components(graph, directed=False)
    if n_parts == 1:
        return spectral_embedding(graph, count + 1, seed=seed)[0][:, 1:]
    console.info(
        f"sanet: a unit's patch graph has {n_parts} connected components; "
        "each component's constant eigenvector is left out of the filters' targets"
    )
    found = []  # (eigenvalue, members, eigenvector on the members)
    for part in range(n_parts):
        members = np.flatnonzero(component == part)
        vectors, values = spectral_embedding(graph[members][:, members], count + 1, seed=seed)
        found.extend((values[j], members, vectors[:, j]) for j in range(1, vectors.shape[1]))
    order = sorted(range(len(found)), key=lambda i: found[i][0])[:count]
    embedding = np.zeros((graph.shape[0], len(order)))
    for column, i in enumerate(order):
        _, members, vector = found[i]
        embedding[members, column] = vector
    return embedding
