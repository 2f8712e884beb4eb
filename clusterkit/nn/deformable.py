"""A Transformer over the slices of a volume with 1-D deformable attention.

Deformable attention (Zhu et al., Deformable DETR, ICLR 2021) lets each query attend to a few
sampled positions instead of every key: per head, the query predicts P offsets around its own
position (its reference point) and P weights (a softmax over the points); the values are read at
the offset positions by interpolation. IICC applies it along the slice axis of a volume. Here it
is that mechanism reduced to one axis: linear interpolation between the two neighbouring slices,
sampling positions clamped into each volume's own depth, so that padding is never read and a volume
of any depth is one sequence. Cost is O(D·P) per head rather than full attention's O(D²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_positions(depth: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(depth, dim) sine/cosine position codes (Vaswani et al.), defined for any depth, so a model
    takes volumes deeper than it was trained on."""
    position = torch.arange(depth, dtype=torch.float32, device=device)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    codes = torch.zeros(depth, dim, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return codes


class DeformableSliceAttention(nn.Module):
    """Multi-head deformable attention along a sequence of slice tokens (B, D, dim), each sequence
    valid up to its own `depths[b]`."""

    def __init__(self, dim: int, heads: int, points: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.points, self.head_dim = heads, points, dim // heads
        self.offsets = nn.Linear(dim, heads * points)
        self.weights = nn.Linear(dim, heads * points)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's start: offsets a fixed pattern (head h looks one way, point p at
        distance p + 1, `ms_deform_attn.py` `_reset_parameters`), uniform point weights, Xavier
        value and output projections."""
        nn.init.zeros_(self.offsets.weight)
        direction = torch.tensor([1.0 if h % 2 == 0 else -1.0 for h in range(self.heads)])
        distance = torch.arange(1, self.points + 1, dtype=torch.float32)
        with torch.no_grad():
            self.offsets.bias.copy_((direction[:, None] * distance[None, :]).flatten())
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)
        for layer in (self.value, self.out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, query: torch.Tensor, values: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
        batch, depth, dim = query.shape
        heads, points, head_dim = self.heads, self.points, self.head_dim
        value = self.value(values).view(batch, depth, heads, head_dim).transpose(1, 2)  # B, H, D, dh
        reference = torch.arange(depth, device=query.device, dtype=query.dtype)
        position = reference[None, :, None, None] + self.offsets(query).view(batch, depth, heads, points)
        last = (depths.to(query.device) - 1).to(query.dtype).view(batch, 1, 1, 1)
        position = torch.minimum(position.clamp_min(0), last)  # B, D, H, P within each volume
        weight = F.softmax(self.weights(query).view(batch, depth, heads, points), dim=-1)
        low = position.floor()
        frac = (position - low).permute(0, 2, 1, 3)  # B, H, D, P
        low = low.long().permute(0, 2, 1, 3)
        high = torch.minimum(low + 1, last.long().view(batch, 1, 1, 1))

        def read(index: torch.Tensor) -> torch.Tensor:
            flat = index.reshape(batch, heads, depth * points, 1).expand(-1, -1, -1, head_dim)
            return torch.gather(value, 2, flat).view(batch, heads, depth, points, head_dim)

        sampled = read(low) * (1 - frac)[..., None] + read(high) * frac[..., None]
        attended = (sampled * weight.permute(0, 2, 1, 3)[..., None]).sum(dim=3)  # B, H, D, dh
        return self.out(attended.transpose(1, 2).reshape(batch, depth, dim))


class DeformableSliceLayer(nn.Module):
    """Deformable DETR's encoder layer (post-norm): attention with position codes on the query,
    then a feed-forward block, each with dropout and a residual."""

    def __init__(self, dim: int, heads: int, points: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention = DeformableSliceAttention(dim, heads, points)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x + positions, x, depths)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class DeformableSliceTransformer(nn.Module):
    """`layers` deformable layers over (B, D, dim) slice tokens. Positions past a volume's depth
    are computed like the others but never read by a valid one, so padding changes no valid output."""

    def __init__(self, dim: int, layers: int, heads: int, points: int, ffn_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableSliceLayer(dim, heads, points, ffn_dim, dropout) for _ in range(layers))

    def forward(self, tokens: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
        positions = sinusoidal_positions(tokens.shape[1], tokens.shape[2], tokens.device).to(tokens.dtype)
        x = tokens
        for layer in self.layers:
            x = layer(x, positions, depths)
        return x


def valid_mask(depths: torch.Tensor, depth: int) -> torch.Tensor:
    """(B, depth) True at each volume's own slices, False on its padding."""
    return torch.arange(depth, device=depths.device)[None, :] < depths[:, None]


def masked_mean(tokens: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """The mean of each sequence's valid tokens: a volume's embedding whatever its depth."""
    mask = valid_mask(depths.to(tokens.device), tokens.shape[1]).to(tokens.dtype)[..., None]
    return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
