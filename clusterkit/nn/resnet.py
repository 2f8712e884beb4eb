"""A small residual network for small images, returning every stage's pooled features.

torchvision's `BasicBlock` (ResNet-18's block) with the CIFAR stem (one 3x3 convolution, no
max-pool): an ImageNet stem's stride 4 would leave an 8x8 digit one pixel. Three stages, the last
two halving the map. IICC builds a slice's token from several stages' pooled features, so
`forward` returns them all, the last first.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1


class SmallResNet(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, previous = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or previous != width:
                downsample = nn.Sequential(conv1x1(previous, width, stride), nn.BatchNorm2d(width))
            stages.append(BasicBlock(previous, width, stride, downsample))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.widths = tuple(widths)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, C, H, W) -> each stage's global-average-pooled features, the last stage first."""
        x = self.stem(x)
        pooled = []
        for stage in self.stages:
            x = stage(x)
            pooled.append(x.mean(dim=(2, 3)))
        return pooled[::-1]


def projection_head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """SwAV's projection head: Linear, BatchNorm, ReLU, Linear (`resnet50.py` `projection_head`)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features),
    )
