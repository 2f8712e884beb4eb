"""The layer stack: every unit's filters applied to every image, concatenated, rectified, pooled.

Layer l+1's units sample their patches from the joint output of all of layer l's units: that is how
the units of consecutive layers interact (each later unit sees what every earlier unit found).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clusterkit.engine.predict import float_batches


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


MAP_BUDGET = 1 << 28  # bytes of float maps one forward pass may hold (256 MiB), whatever the image size


def rows_per_pass(layers: list[SpectralLayer], image_shape: tuple[int, int, int], batch_size: int) -> int:
    """Images per forward pass: at most `batch_size`, fewer where one image's maps are large (a 256 px
    image's first layer alone holds ~30 MB), so that memory is bounded by MAP_BUDGET, not by the batch."""
    c, h, w = image_shape
    widest = c * h * w
    for layer in layers:
        f = layer.filters.shape[0]
        widest = max(widest, (c + 6 * f) * h * w)  # input, response, and the split-rectified copies
        c, h, w = 2 * f, h // layer.pool, w // layer.pool
    return max(1, min(batch_size, MAP_BUDGET // (4 * widest)))


def iter_maps(
    pixels: np.ndarray, layers: list[SpectralLayer], batch_size: int, device: torch.device,
) -> Iterator[torch.Tensor]:
    """The last map of every image, in order, a bounded batch at a time, on the CPU."""
    rows = rows_per_pass(layers, pixels.shape[1:], batch_size)
    for x in float_batches(pixels, rows, device):
        with torch.no_grad():  # not inference mode: the maps are used by the caller, outside it
            maps = forward(x, layers).cpu()
        yield maps
