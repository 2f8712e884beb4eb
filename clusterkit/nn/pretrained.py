"""A pretrained convolutional trunk in place of a network trained from scratch (GATCluster's
`backbone` option): the same interface as `VGGBackbone` (images in [0, 1] -> a feature map of
`out_dim` channels, its `map_size`), so that the heads and the attention built on it do not change.

Resizing and normalisation happen here, on the device, so that the caller's augmentation, training
loop and inference feed the network the same [0, 1] images as they feed the VGG backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from clusterkit.nn.vgg import conv_bn_relu


@torch.no_grad()
def map_shape(net: nn.Module, side: int) -> tuple[int, int, int]:
    """(channels, h, w) of `net`'s output for a (1, 3, side, side) input, from one eval-mode pass
    (no statistics change); the mode is restored."""
    was_training = net.training
    net.eval()
    out = net(torch.zeros(1, 3, side, side))
    net.train(was_training)
    return int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


class PretrainedBackbone(nn.Module):
    """(N, 1 or 3, H, W) images in [0, 1] -> (N, out_dim, h, w): channels repeated to RGB where
    there is one (luminance), resized to `side` (bilinear), normalised with the weights' `mean` and
    `std`, the trunk's map, then a 1x1 conv + BN + ReLU to `out_dim` (as VGGBackbone ends).

    `frozen`: the trunk takes no gradients and stays in eval mode whatever `train()` is asked, so
    its BatchNorm statistics stay those of its pretraining; otherwise it trains with the rest."""

    def __init__(
        self,
        trunk: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        side: int,
        out_dim: int,
        frozen: bool,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.side = side
        self.frozen = frozen
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        channels, height, width = map_shape(trunk, side)
        self.reduce = nn.Sequential(*conv_bn_relu(channels, out_dim, 1))
        self.out_dim = out_dim
        self.map_size = (height, width)
        if frozen:
            trunk.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> PretrainedBackbone:
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False, antialias=True)
        return self.reduce(self.trunk((x - self.mean) / self.std))
