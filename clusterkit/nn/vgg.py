"""VGG-style convnet trained from scratch (GATCluster's backbone), with pooling chosen by input size.

The official GATCluster network has three blocks of three 3x3 conv + BatchNorm + ReLU layers
(64/128/256 channels), a 2x2 max-pool after each block and a final 1x1 conv to a small feature
dimension; with unpadded convs a 96 px input ends as a 6x6 map. That recipe needs inputs of at least
~70 px. Here convs are padded (the map size only changes at a pool), a pool is added only while the
map stays at least `min_map` pixels wide, and a block is dropped when its resolution level would
repeat an earlier one's: an 8x8 digit gets two blocks (8x8, then 4x4) and a 4x4 final map, a 96 px
photo gets the full three blocks and a 12x12 map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def pooling_plan(side: int, levels: int, min_map: int) -> int:
    """How many 2x poolings an input of `side` px affords (at most `levels`) keeping the map >= min_map."""
    pools = 0
    while pools < levels and side // 2 >= min_map:
        side //= 2
        pools += 1
    return pools


class VGGBackbone(nn.Module):
    """(N, C, H, W) images -> (N, out_dim, h, w) feature map; `map_size` is (h, w)."""

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        widths: Sequence[int] = (64, 128, 256),
        convs_per_block: int = 3,
        out_dim: int = 32,
        min_map: int = 4,
    ) -> None:
        super().__init__()
        pools = pooling_plan(min(image_size), len(widths), min_map)
        n_blocks = min(len(widths), pools + 1)  # one block per resolution level
        layers: list[nn.Module] = []
        channels = in_channels
        for b in range(n_blocks):
            for _ in range(convs_per_block):
                layers += conv_bn_relu(channels, widths[b], 3)
                channels = widths[b]
            if b < pools:
                layers.append(nn.MaxPool2d(2))
        layers += conv_bn_relu(channels, out_dim, 1)
        self.features = nn.Sequential(*layers)
        self.out_dim = out_dim
        self.map_size = (image_size[0] >> pools, image_size[1] >> pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
