"""Gaussian spatial attention (GATCluster's attention module).

A small network reads the feature map and predicts one isotropic Gaussian per image: a centre
mu = (mu_y, mu_x) and a spread sigma, all in (0, 1) through a sigmoid. The mask on the map's grid of
normalized coordinates c_ij in [0, 1]^2 is

    A_ij = exp(-||c_ij - mu||^2 / (2 * lam * sigma + eps)),

so it is 1 at the centre and its width follows sigma; lam (0.05 in the official code) scales the
widest mask to about half the image. The attended feature is sum_ij A_ij * F[:, i, j]: a descriptor
of the region the network looks at, unlike the global average that sees background as well. With
`cells` set, the sum is rescaled by cells / (H * W), i.e. expressed on a grid of `cells` cells
whatever the map's size: since the mask lives on normalized coordinates, a plain sum grows with the
map's area (a 12x12 map sums 4x what the official 6x6 map does for the same region).
"""

from __future__ import annotations

import torch
from torch import nn

from clusterkit.nn.vgg import conv_bn_relu

_EPS = 1e-5


def grid_coordinates(height: int, width: int) -> torch.Tensor:
    """(height * width, 2) coordinates (row, column) scaled to [0, 1]; a side of 1 px sits at 0."""
    rows = torch.arange(height, dtype=torch.float32) / max(height - 1, 1)
    cols = torch.arange(width, dtype=torch.float32) / max(width - 1, 1)
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def gaussian_mask(theta: torch.Tensor, coords: torch.Tensor, lam: float) -> torch.Tensor:
    """theta (N, 3) = (mu_y, mu_x, sigma) -> masks (N, H*W) with values in (0, 1]."""
    mu, sigma = theta[:, None, :2], theta[:, 2:3]
    distance = ((coords[None] - mu) ** 2).sum(dim=-1)
    return torch.exp(-distance / (2 * lam * sigma + _EPS))


class GaussianAttention(nn.Module):
    """Feature map (N, C, H, W) -> attended features (N, C), the mask (N, H, W) and theta (N, 3).

    As in the official code, the Gaussian's parameters come from a 1x1 conv to `hidden` channels
    (BatchNorm + ReLU) flattened over the whole map and a linear layer with a sigmoid.
    """

    def __init__(
        self, channels: int, map_size: tuple[int, int], hidden: int, lam: float = 0.05, cells: int | None = None
    ) -> None:
        super().__init__()
        height, width = map_size
        self.scale = 1.0 if cells is None else cells / (height * width)
        self.reduce = nn.Sequential(*conv_bn_relu(channels, hidden, 1))
        self.theta = nn.Sequential(nn.Flatten(), nn.Linear(hidden * height * width, 3), nn.Sigmoid())
        self.lam = lam
        self.register_buffer("coords", grid_coordinates(height, width), persistent=False)

    def forward(self, features: torch.Tensor, values: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """`values` (default `features`) is the map that the mask weights."""
        values = features if values is None else values
        theta = self.theta(self.reduce(features))
        mask = gaussian_mask(theta, self.coords, self.lam).to(values.dtype)
        attended = torch.einsum("ncp,np->nc", values.flatten(2), mask)
        if self.scale != 1.0:
            attended = attended * self.scale
        return attended, mask.view(-1, *values.shape[2:]), theta
