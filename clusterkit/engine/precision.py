"""Mixed precision on CUDA only: bf16 autocast where the GPU has it, fp16 with loss scaling otherwise.

CPU runs stay in float32: CPU autocast is slow for convolutions and would break the bit-for-bit
resume and determinism guarantees that the tests check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


class Precision:
    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.enabled = enabled and device.type == "cuda"
        self.dtype = torch.bfloat16 if self.enabled and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, frozen: Iterable[nn.Parameter] = ()) -> None:
        """Backward and one optimizer step, with loss scaling when fp16 needs it; the `frozen`
        parameters' gradients are dropped between the two, so the step leaves them as they are."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for parameter in frozen:
            parameter.grad = None
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)
