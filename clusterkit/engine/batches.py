"""Batches from the samples held on the device: the decoded uint8 set lives on the GPU when it fits,
else in pinned host memory, so an epoch is index arithmetic and no per-item Python.

A DataLoader with workers would only add process start-up and pickling here: decoding already
happened when the ImageSet was loaded, and what is left per batch (gather, scale) is a single
tensor operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from clusterkit.engine.distributed import DistEnv, shard

# Keep the cache on the GPU only while it takes at most this share of the free memory.
_GPU_CACHE_SHARE = 0.25


@dataclass
class Batch:
    """Images in [0, 1] as float32 (B, C, H, W) on the training device, and their dataset rows."""

    index: torch.Tensor
    x: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])


class DeviceData:
    """The uint8 samples of a fit, on the training device where they fit (else pinned host memory)."""

    def __init__(self, pixels: np.ndarray, device: torch.device) -> None:
        self.device = device
        cache = torch.from_numpy(np.ascontiguousarray(pixels))
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            cache = cache.to(device) if cache.numel() < _GPU_CACHE_SHARE * free else cache.pin_memory()
        self.pixels = cache

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def batch(self, index: torch.Tensor) -> Batch:
        rows = self.pixels[index.to(self.pixels.device)]
        x = rows.to(self.device, non_blocking=True).float().div_(255.0)
        return Batch(index.to(self.device), x)

    def shuffled(self, batch_size: int, seed: int, env: DistEnv, rows: torch.Tensor | None = None) -> Iterator[Batch]:
        """One epoch over `rows` (default: all images) in a seeded random order, this rank's shard,
        `batch_size` images per step across all ranks together (so a run means the same optimisation
        with 1 or N processes)."""
        rows = torch.arange(len(self)) if rows is None else rows
        order = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))]
        yield from self._batches(shard(order, env), -(-batch_size // env.world_size))

    def ordered(self, batch_size: int, env: DistEnv) -> Iterator[Batch]:
        """Every image once in input order (this rank's shard), for inference passes."""
        yield from self._batches(shard(torch.arange(len(self)), env), batch_size)

    def _batches(self, index: torch.Tensor, per_step: int) -> Iterator[Batch]:
        for start in range(0, len(index), per_step):
            yield self.batch(index[start : start + per_step])
