"""Image-level similarity from local blocks, robust to occlusion, in O(N x candidates) memory.

The last feature map is cut into a grid x grid array of blocks, and two images are compared block by
block (squared distance of the block vectors at the same place). Only the most similar blocks count:
the robust distance is the mean of the `keep` smallest block distances, so the blocks an occluder
spoils, which are the least similar ones, drop out. Blocks that are blank in both images (blank in the
input: background, or an occluder) are left out rather than counted as a perfect match; otherwise two
images occluded at the same place would look alike because of the occluder itself. Where blankness
may be an occluder's doing, it can be left out in either image (`either`), or only where the image's
robust neighbours say so (`inferred`: a blank block where most of them have ink is taken as erased).

All pairs would cost N x N, so each image's candidates come first from a kNN on the whole feature
vector (the untrimmed distance, on its first principal components, through `neighbors.knn_query`:
FAISS when installed), and only those candidates are re-ranked with the robust distance. Asked for
as many candidates as there are images, the search is skipped and every pair compared, in chunks. Block vectors
are kept in half precision (distances are computed in single precision): the (N, G, D) table is the
one structure that grows with N, and halving it matters at 50k images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from clusterkit.algorithms.neighbors import Backend, knn_query

CELL = 2  # each block keeps up to 2 x 2 positions of the map: a little layout inside the block
BLANK_FRACTION = 0.1  # an input block under 10% of the mean input-block norm counts as blank
# A block's state: ink; blank (no ink in the input); or blank where the image's neighbours have ink,
# taken as erased (by an occluder) rather than as background: missing.
INK, BLANK, MISSING = 0, 1, 2
BlankRule = Literal["both", "either", "inferred"]
_BLANK_RULES = {  # which blocks a pair leaves out, from the two images' block states
    "both": lambda a, b: (a >= BLANK) & (b >= BLANK),
    "either": lambda a, b: (a >= BLANK) | (b >= BLANK),
    "inferred": lambda a, b: (a == MISSING) | (b == MISSING) | ((a >= BLANK) & (b >= BLANK)),
}
TIE_BREAK = 1e-6  # weight of the untrimmed mean block distance in the robust one: orders ties only
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
    """Block vectors (N, G, D) of the last map, and each block's state (N, G): INK, BLANK or MISSING
    (a bool mask reads as blank or not)."""

    vectors: torch.Tensor
    state: torch.Tensor

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
    def fit(cls, sample: Blocks, dims: int) -> Projection:
        """Top principal axes from the eigenvectors of the smaller Gram matrix (n x n or D x D), in
        double precision: a full SVD of the n x D sample costs about three times as much (D = 4,096 on
        digits). Directions of (numerically) zero variance get a zero axis, as they carry nothing:
        from the n x n Gram matrix they would be round-off blown up to unit length."""
        flat = sample.flat()
        mean = flat.mean(dim=0)
        centered = (flat - mean).double()
        n, d = centered.shape
        if n < d:  # axes = X^T u / |X^T u| for the top eigenvectors u of X X^T
            values, u = torch.linalg.eigh(centered @ centered.T)
            axes = centered.T @ u
            axes = axes / axes.norm(dim=0).clamp_min(1e-300)
        else:
            values, axes = torch.linalg.eigh(centered.T @ centered)
        real = values > values.max().clamp_min(0) * max(n, d) * torch.finfo(torch.float64).eps
        axes = (axes * real).flip(1)[:, :dims]  # eigh orders ascending; the largest first
        return cls(mean, axes.float().contiguous())

    def __call__(self, blocks: Blocks) -> np.ndarray:
        """Coordinates (N, d), in chunks: the float copy of the whole table would double its memory."""
        rows = max(1, RERANK_ELEMENTS // max(1, blocks.vectors[0].numel()))
        parts = [
            (blocks.vectors[start : start + rows].reshape(-1, self.mean.numel()).float() - self.mean) @ self.axes
            for start in range(0, len(blocks), rows)
        ]
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.axes.shape[1]), dtype=np.float32)


def split_blocks(inputs: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C, H, W) -> (N*grid*grid, C, h, w): the input cut into its grid x grid blocks, row-major.

    Sides that grid does not divide are zero-padded at the bottom and right first. Each block then goes
    through the layers on its own (zero padding at its border), so that a block's descriptor depends
    on its own pixels only: an occluder spoils exactly the blocks it overlaps, not also the blocks
    within the filters' reach of it, which on small images would be nearly all of them.
    """
    n, c, h, w = inputs.shape
    bh, bw = -(-h // grid), -(-w // grid)
    x = F.pad(inputs, (0, bw * grid - w, 0, bh * grid - h))
    tiles = x.reshape(n, c, grid, bh, grid, bw).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(n * grid * grid, c, bh, bw)


def describe(inputs: torch.Tensor, last: torch.Tensor, grid: int, blank_norm: float) -> Blocks:
    """Blocks of the last map; blankness judged on the input itself, where blank means no ink.

    `last` is either the last map of whole images (N, C', H', W') or, from block-wise inputs
    (split_blocks), the last maps of all N*grid*grid blocks: then each block map is pooled on its own.
    """
    blank = block_features(inputs, grid).norm(dim=-1) < blank_norm
    if len(last) == len(inputs):
        vectors = block_features(last, grid)
    else:
        vectors = block_features(last, 1).reshape(len(inputs), grid * grid, -1)
    return Blocks(vectors.half(), blank.to(torch.uint8) * BLANK)


def blank_threshold(inputs: torch.Tensor, grid: int) -> float:
    return BLANK_FRACTION * float(block_features(inputs, grid).norm(dim=-1).mean())


def n_kept(n_informative: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Blocks that count for each pair: ceil(keep_fraction x its informative blocks), at least 1.

    The share is taken of the pair's own informative blocks (not blank in both), not of all grid
    blocks: blocks blank in both are already out, and counting them would leave a pair with few
    informative blocks untrimmed, however many of them an occluder spoiled.
    """
    kept = torch.ceil(keep_fraction * n_informative.double() - 1e-9).long()
    return kept.clamp_min(1)


def _trimmed_mean(block: torch.Tensor, pair_blank: torch.Tensor, keep_fraction: float) -> torch.Tensor:
    """Mean of each pair's kept smallest informative block distances, plus TIE_BREAK times the mean of
    all its block distances: (..., G) -> (...).

    The second term only orders ties: trimming can put an image at distance 0 from several others
    whose kept blocks match exactly (blank-in-either rule, small blocks), and then an exact copy, and
    only an exact copy, must still come first, or `assign` would not give a training image its own
    cluster. A pair with no informative block gets an infinite distance. `block` is overwritten.
    """
    whole = block.mean(dim=-1)
    informative = ~pair_blank
    n_informative = informative.sum(dim=-1)
    ordered = block.masked_fill_(~informative, float("inf")).sort(dim=-1).values  # informative first
    running = torch.where(torch.isfinite(ordered), ordered, torch.zeros_like(ordered)).cumsum(dim=-1)
    kept = n_kept(n_informative, keep_fraction)
    mean = running.gather(-1, (kept - 1)[..., None]).squeeze(-1) / kept.to(running.dtype) + TIE_BREAK * whole
    return torch.where(n_informative > 0, mean, torch.full_like(mean, float("inf")))


def robust_distances(
    queries: Blocks,
    data: Blocks,
    candidates: torch.Tensor,
    keep_fraction: float,
    device: torch.device,
    blank_blocks: BlankRule = "both",
) -> torch.Tensor:
    """Trimmed block distance between queries and candidates: (Q, C).

    For each pair, the m = ceil(keep_fraction x n) smallest block distances are averaged (ties then
    ordered by `_trimmed_mean`'s tie-break), n the pair's informative blocks: not blank in both
    images (`blank_blocks="both"`), or not blank in either
    (`"either"`: blankness may be missing ink, as where an occluder erased strokes, so it is no
    evidence; but then a blank area is no evidence on clean images either), or neither blank in both
    nor missing in either (`"inferred"`, states from `infer_missing`). A pair with no
    informative block at all gets an infinite distance. Queries go in chunks sized so that the
    gathered candidate blocks stay small, whatever N is.
    """
    out = []
    batch_size = max(1, RERANK_ELEMENTS // candidates.shape[1] // data.vectors[0].numel())
    for start in range(0, len(queries), batch_size):
        stop = start + batch_size
        cand = candidates[start:stop]
        q = queries.vectors[start:stop].to(device).float()
        block = (data.vectors[cand].to(device).float() - q[:, None]).pow_(2).sum(dim=-1)  # b, C, G
        pair_blank = _BLANK_RULES[blank_blocks](queries.state[start:stop, None, :], data.state[cand])
        out.append(_trimmed_mean(block, pair_blank.to(device), keep_fraction).cpu())
    return torch.cat(out)


def all_pairs_neighbors(
    queries: Blocks,
    data: Blocks,
    n_neighbors: int,
    keep_fraction: float,
    device: torch.device,
    exclude_self: bool,
    blank_blocks: BlankRule = "both",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact robust kNN over every row of `data`: (Q, n) distances (squared, trimmed) and indices.

    With `exclude_self`, queries are `data` itself, row for row, and each row's own index is left out.

    Block distances come from one batched `cdist` per chunk (direct differences, not the |q|^2 + |x|^2
    - 2 q.x expansion, whose round-off would make an image's distance to itself non-zero and break
    the exact match that `assign` relies on) instead of gathering a copy of every candidate's blocks.
    Queries and data both go in chunks and only each query's running best n are kept, so memory stays
    O(Q x n + chunk) beyond the table itself (one copy of it on a GPU), whatever N is.
    """
    # A chunk's b x m x G distances have about eight same-sized companions (a transposed copy, sort
    # values and indices, masks, the cumulative sum), so b = m = sqrt(budget / 8G) keeps it in budget.
    rows = max(1, int((RERANK_ELEMENTS // (8 * data.vectors.shape[1])) ** 0.5))
    # The table goes to the device once (in half precision), not once per query chunk.
    data_vectors, data_state = data.vectors.to(device), data.state.to(device)
    best_dist, best_idx = [], []
    for q_start in range(0, len(queries), rows):
        q = queries.vectors[q_start : q_start + rows].to(device).float().transpose(0, 1)  # G, b, D
        q_state = queries.state[q_start : q_start + rows].to(device)
        dist = torch.full((q.shape[1], 0), float("inf"), device=device)
        idx = torch.zeros((q.shape[1], 0), dtype=torch.long, device=device)
        for d_start in range(0, len(data), rows):
            x = data_vectors[d_start : d_start + rows].float().transpose(0, 1)  # G, m, D
            block = torch.cdist(q, x, compute_mode="donot_use_mm_for_euclid_dist").pow_(2)  # G, b, m
            pair_blank = _BLANK_RULES[blank_blocks](q_state[:, None, :], data_state[d_start : d_start + rows][None])
            chunk = _trimmed_mean(block.permute(1, 2, 0).contiguous(), pair_blank, keep_fraction)  # b, m
            chunk_idx = torch.arange(d_start, d_start + chunk.shape[1], device=device).expand_as(chunk)
            if exclude_self:
                chunk = chunk.masked_fill(
                    chunk_idx == torch.arange(q_start, q_start + len(chunk), device=device)[:, None], float("inf")
                )
            dist, order = torch.cat([dist, chunk], dim=1).topk(
                min(n_neighbors, dist.shape[1] + chunk.shape[1]), dim=1, largest=False
            )
            idx = torch.cat([idx, chunk_idx], dim=1).gather(1, order)
        best_dist.append(dist.cpu())
        best_idx.append(idx.cpu())
    return torch.cat(best_dist), torch.cat(best_idx)


def searched_candidates(n_candidates: int, n_neighbors: int, n_data: int, exclude_self: bool) -> int:
    """How many candidates a robust search takes; `n_data` means every row, with no search at all."""
    return min(max(n_candidates, n_neighbors) + int(exclude_self), n_data)


def robust_neighbors(
    queries: Blocks,
    data: Blocks,
    projection: Projection,
    n_neighbors: int,
    n_candidates: int,
    keep_fraction: float,
    device: torch.device,
    backend: Backend,
    exclude_self: bool,
    blank_blocks: BlankRule = "both",
    data_coords: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The `n_neighbors` robust-nearest rows of `data` for each query: (distances, indices), nearest first.

    With `exclude_self` the queries are `data` itself and each row's own index is removed.
    `data_coords`: `projection(data)` where the caller keeps it, so that a fixed table is not
    projected again on every search.
    """
    n_candidates = searched_candidates(n_candidates, n_neighbors, len(data), exclude_self)
    n_neighbors = min(n_neighbors, n_candidates - int(exclude_self))
    if n_candidates == len(data):  # every row is a candidate: no search, the exact all-pairs path
        values, indices = all_pairs_neighbors(
            queries, data, n_neighbors, keep_fraction, device, exclude_self, blank_blocks
        )
    else:
        data_coords = projection(data) if data_coords is None else data_coords
        query_coords = data_coords if exclude_self else projection(queries)
        _, idx = knn_query(data_coords, query_coords, n_candidates, backend)
        idx = torch.from_numpy(idx)
        dist = robust_distances(queries, data, idx, keep_fraction, device, blank_blocks)
        if exclude_self:
            dist = dist.masked_fill(idx == torch.arange(len(queries))[:, None], float("inf"))
        best = dist.topk(n_neighbors, dim=1, largest=False)
        values, indices = best.values, idx.gather(1, best.indices)
    # An infinite distance (no informative block) becomes the largest finite one: weak, not broken.
    finite_max = values[torch.isfinite(values)].max() if torch.isfinite(values).any() else torch.tensor(1.0)
    values = torch.where(torch.isfinite(values), values, finite_max)
    return values.clamp_min(0).sqrt().numpy(), indices.numpy()


def infer_missing(queries: Blocks, data: Blocks, neighbors: torch.Tensor) -> Blocks:
    """`queries` with each BLANK block that most of its `neighbors` (rows of `data`, (Q, n)) have ink
    in marked MISSING: erased rather than background.

    On its own a blank block is ambiguous: an occluder of the background's colour erases ink, and an
    erased stroke looks like a stroke another class lacks. Neighbours found without blank blocks (the
    `either` rule) settle it by majority: where the images most like this one have ink, its blank is
    taken as erased and left out of its comparisons; where they are blank too, it stays evidence.
    """
    blank = queries.state >= BLANK
    ink_share = (data.state[neighbors] == INK).float().mean(dim=1)  # Q, G
    missing = blank & (ink_share > 0.5)
    return Blocks(queries.vectors, blank.to(torch.uint8) * BLANK + missing.to(torch.uint8) * (MISSING - BLANK))
