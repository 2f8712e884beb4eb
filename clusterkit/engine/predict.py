"""Batched no-grad inference of a fitted net on uint8 samples: the one loop every deep method's
`predict_proba` uses, so device handling and memory bounds are written once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn


def float_batches(pixels: np.ndarray, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """uint8 (N, ...) -> float [0, 1] batches on `device`, in order: the full float set never sits
    in memory."""
    for start in range(0, len(pixels), batch_size):
        yield torch.from_numpy(pixels[start : start + batch_size]).to(device).float().div_(255.0)


@torch.no_grad()
def predict_batches(
    net: nn.Module,
    fn: Callable[[torch.Tensor], torch.Tensor],
    pixels: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """`fn(x)` for every sample in input order as float64 on the CPU, `net` in eval mode on `device`
    meanwhile; the net goes back to the CPU and to its own train/eval mode afterwards, so a loaded
    model holds no device memory between calls."""
    was_training = net.training
    net.to(device).eval()
    try:
        out = [fn(x).double().cpu() for x in float_batches(pixels, batch_size, device)]
    finally:
        net.cpu().train(was_training)
    return torch.cat(out).numpy()
