"""The layer stack: every unit's filters applied to every image, concatenated, rectified, pooled;
and how it is learned (`fit_layers`).

Layer l+1's units sample their patches from the joint output of all of layer l's units: that is how
the units of consecutive layers interact (each later unit sees what every earlier unit found).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from clusterkit import console
from clusterkit.engine.predict import float_batches
from clusterkit.errors import InputError
from clusterkit.methods.sanet.blocks import CELL
from clusterkit.methods.sanet.units import sample_patches, spectral_filters

if TYPE_CHECKING:
    from clusterkit.methods.sanet import SANetConfig


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
    pixels: np.ndarray,
    layers: list[SpectralLayer],
    batch_size: int,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """The last map of every image, in order, a bounded batch at a time, on the CPU."""
    rows = rows_per_pass(layers, pixels.shape[1:], batch_size)
    for x in float_batches(pixels, rows, device):
        with torch.no_grad():  # not inference mode: the maps are used by the caller, outside it
            maps = forward(x, layers).cpu()
        yield maps


def unit_seed(seed: int, depth: int, unit: int) -> int:
    """The seed of one unit's spectral regression (its patch graph and eigensolver): the fit's seed
    times 1000, plus 100 per layer, plus the unit's index. Distinct for every unit of one fit while a
    layer has fewer than 100 units and a fit fewer than 10 layers; the same numbers as every model
    fitted so far, so that fits reproduce."""
    return seed * 1000 + depth * 100 + unit


def fit_layers(pixels: np.ndarray, config: SANetConfig, device: torch.device, seed: int) -> list[SpectralLayer]:
    """The layer stack, learned layer by layer: each unit draws its images, maps them through the
    layers fitted so far, and learns its filters from their patches; the layer is all units' filters
    side by side. Stops stacking where pooling would leave fewer than CELL x CELL positions a block."""
    cfg = config
    generator = torch.Generator().manual_seed(seed)
    layers: list[SpectralLayer] = []
    side = min(pixels.shape[2:])
    for depth in range(cfg.layers):
        patch = cfg.patch_size if depth == 0 else cfg.deep_patch_size
        unit_filters = []
        for unit in range(cfg.units):
            subset = torch.randperm(len(pixels), generator=generator)[: cfg.subset_size].sort().values.numpy()
            maps = iter_maps(pixels[subset], layers, cfg.batch_size, device)
            patches = sample_patches(maps, len(subset), patch, cfg.patches_per_unit, generator)
            if len(patches) <= cfg.n_neighbors + cfg.filters + 1:
                raise InputError("sanet: the images are almost blank; no patch with structure to learn from")
            filters = spectral_filters(
                patches, cfg.filters, cfg.n_neighbors, cfg.ridge, unit_seed(seed, depth, unit), cfg.knn_backend
            )
            unit_filters.append(filters.reshape(cfg.filters, -1, patch, patch))
        deeper = depth < cfg.layers - 1 and side // cfg.pool >= cfg.grid * CELL
        layers.append(SpectralLayer(torch.cat(unit_filters), cfg.pool if deeper else 1))
        console.info(f"sanet: layer {depth + 1}: {cfg.units} units x {cfg.filters} filters ({patch}x{patch})")
        if not deeper:
            break
        side //= cfg.pool
    if len(layers) < cfg.layers:
        console.info(
            f"sanet: stopped at {len(layers)} layer(s): pooling a {side}px map would leave fewer than "
            f"{CELL}x{CELL} positions per block of the {cfg.grid}x{cfg.grid} grid"
        )
    return layers
