"""Image-level similarity from local blocks, robust to occlusion, in O(N x candidates) memory.

The last feature map is cut into a grid x grid array of blocks, and two images are compared block by
block (squared distance of the block vectors at the same place). Only the most similar blocks count:
the robust distance is the mean of the `keep` smallest block distances, so the blocks an occluder
spoils, which are the least similar ones, drop out. Blocks that are blank in both images (blank in the
input: background, or an occluder) are left out rather than counted as a perfect match; otherwise two
images occluded at the same place would look alike because of the occluder itself.

All pairs would cost N x N, so each image's candidates come first from a kNN on the whole feature
vector (the untrimmed distance, on its first principal components, through `neighbors.knn_query`:
FAISS when installed), and only those candidates are re-ranked with the robust distance. Block vectors
are kept in half precision (distances are computed in single precision): the (N, G, D) table is the
one structure that grows with N, and halving it matters at 50k images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..neighbors import Backend, knn_query

CELL = 2  # each block keeps up to 2 x 2 positions of the map: a little layout inside the block
BLANK_FRACTION = 0.1  # an input block under 10% of the mean input-block norm counts as blank
RERANK_ELEMENTS = 1 << 22  # floats in one re-ranking chunk (queries x candidates x blocks x dims): 16 MB


def block_features(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, grid*grid, C*cell*cell) block vectors, cells average-pooled from the map."""
    n, c, h, w = maps.shape
    cell = max(1, min(CELL, h // grid, w // grid))
    side = grid * cell
    pooled = F.adaptive_avg_pool2d(maps, (side, side))
    tiles = pooled.reshape(n, c, grid, cell, grid, cell).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(n, grid * grid, c * cell * cell)


@dataclass
class Blocks:
    """Block vectors (N, G, D) of the last map, and which blocks are blank in the input (N, G)."""

    vectors: torch.Tensor
    blank: torch.Tensor

    def __len__(self) -> int:
        return len(self.vectors)

    def flat(self) -> torch.Tensor:
        return self.vectors.reshape(len(self), -1).float()


@dataclass
class Projection:
    """Principal axes (D, d) and mean (D,) of flattened block vectors: where candidates are searched."""

    mean: torch.Tensor
    axes: torch.Tensor

    @classmethod
    def fit(cls, sample: Blocks, dims: int) -> "Projection":
        flat = sample.flat()
        mean = flat.mean(dim=0)
        _, _, vt = torch.linalg.svd(flat - mean, full_matrices=False)
        return cls(mean, vt[:dims].T.contiguous())

    def __call__(self, blocks: Blocks) -> np.ndarray:
        return ((blocks.flat() - self.mean) @ self.axes).numpy()


def describe(inputs: torch.Tensor, last: torch.Tensor, grid: int, blank_norm: float) -> Blocks:
    """Blocks of the last map; blankness judged on the input itself, where blank means no ink."""
    blank = block_features(inputs, grid).norm(dim=-1) < blank_norm
    return Blocks(block_features(last, grid).half(), blank)


def blank_threshold(inputs: torch.Tensor, grid: int) -> float:
    return BLANK_FRACTION * float(block_features(inputs, grid).norm(dim=-1).mean())


def n_kept(n_blocks: int, keep_fraction: float) -> int:
    return max(1, math.ceil(keep_fraction * n_blocks))


def robust_distances(
    queries: Blocks, data: Blocks, candidates: torch.Tensor, keep: int, device: torch.device
) -> torch.Tensor:
    """Mean of the `keep` smallest informative block distances between queries and candidates: (Q, C).

    A pair with no informative block at all (both images blank everywhere) gets an infinite distance.
    Queries go in chunks sized so that the gathered candidate blocks stay small, whatever N is.
    """
    out = []
    batch_size = max(1, RERANK_ELEMENTS // candidates.shape[1] // data.vectors[0].numel())
    for start in range(0, len(queries), batch_size):
        stop = start + batch_size
        cand = candidates[start:stop]
        q = queries.vectors[start:stop].to(device).float()
        block = (data.vectors[cand].to(device).float() - q[:, None]).pow_(2).sum(dim=-1)  # b, C, G
        both_blank = (queries.blank[start:stop, None, :] & data.blank[cand]).to(device)
        block = block.masked_fill_(both_blank, float("inf"))
        smallest = block.topk(keep, dim=-1, largest=False).values
        counted = torch.isfinite(smallest)
        total = torch.where(counted, smallest, torch.zeros_like(smallest)).sum(dim=-1)
        n = counted.sum(dim=-1)
        out.append(torch.where(n > 0, total / n.clamp_min(1), torch.full_like(total, float("inf"))).cpu())
    return torch.cat(out)


def robust_neighbors(
    queries: Blocks, data: Blocks, projection: Projection, n_neighbors: int, n_candidates: int, keep: int,
    device: torch.device, backend: Backend, exclude_self: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The `n_neighbors` robust-nearest rows of `data` for each query: (distances, indices), nearest first.

    With `exclude_self` the queries are `data` itself and each row's own index is removed.
    """
    extra = 1 if exclude_self else 0
    n_candidates = min(max(n_candidates, n_neighbors) + extra, len(data))
    _, idx = knn_query(projection(data), projection(queries), n_candidates, backend)
    idx = torch.from_numpy(idx)
    dist = robust_distances(queries, data, idx, keep, device)
    if exclude_self:
        dist = dist.masked_fill(idx == torch.arange(len(queries))[:, None], float("inf"))
    n_neighbors = min(n_neighbors, n_candidates - extra)
    best = dist.topk(n_neighbors, dim=1, largest=False)
    # An infinite distance (no informative block) becomes the largest finite one: weak, not broken.
    values = best.values
    finite_max = values[torch.isfinite(values)].max() if torch.isfinite(values).any() else torch.tensor(1.0)
    values = torch.where(torch.isfinite(values), values, finite_max)
    return values.clamp_min(0).sqrt().numpy(), idx.gather(1, best.indices).numpy()
