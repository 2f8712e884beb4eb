"""The layer stack: every unit's filters applied to every image, concatenated, rectified, pooled.

Layer l+1's units sample their patches from the joint output of all of layer l's units: that is how
the units of consecutive layers interact (each later unit sees what every earlier unit found).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.data import float_batches


@dataclass
class SpectralLayer:
    """Filters (F, C, p, p) of all units of one layer, and the pooling factor after it (1: none)."""

    filters: torch.Tensor
    pool: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        w = self.filters.to(x.device)
        p = w.shape[-1]
        # Filters were learned on mean-removed patches: w.(P - mean(P)) = w.P - sum(w) mean(P).
        local_mean = F.avg_pool2d(x.mean(dim=1, keepdim=True), p, stride=1, padding=p // 2, count_include_pad=True)
        y = F.conv2d(x, w, padding=p // 2) - w.sum(dim=(1, 2, 3)).view(1, -1, 1, 1) * local_mean
        # Split rectification keeps both signs (y = relu(y) - relu(-y)), so no response is lost.
        y = torch.cat([F.relu(y), F.relu(-y)], dim=1)
        return F.avg_pool2d(y, self.pool) if self.pool > 1 else y


def forward(x: torch.Tensor, layers: list[SpectralLayer]) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def map_images(
    pixels: np.ndarray, layers: list[SpectralLayer], batch_size: int, device: torch.device,
) -> torch.Tensor:
    """The last map of every image, computed batch by batch, on the CPU."""
    with torch.inference_mode():
        return torch.cat([forward(x, layers).cpu() for x in float_batches(pixels, batch_size, device)])
