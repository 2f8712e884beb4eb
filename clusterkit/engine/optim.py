"""Optimizers and learning-rate schedules that the methods' papers use and torch does not ship."""

from __future__ import annotations

import math

import torch


class ClippedAdam(torch.optim.Adam):
    """Adam that first clips every gradient element to [-clip, clip], as the official training loop
    does (`clip_grad_value_(model.parameters(), 10)` before each step). Under fp16 loss scaling the
    scaler unscales the gradients before calling `step`, so the clip sees true gradient values."""

    def __init__(self, params, lr: float, clip: float) -> None:
        super().__init__(params, lr=lr)
        self.clip = clip

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if self.clip > 0:
            for group in self.param_groups:
                torch.nn.utils.clip_grad_value_(group["params"], self.clip)
        return super().step(closure)


def warmup_cosine(step: int, total: int, warmup: int, base: float, final: float, start: float = 0.0) -> float:
    """SwAV's per-step schedule (`main_swav.py`): linear from `start` to `base` over the first
    `warmup` steps, then a half cosine from `base` down to `final` at step `total`; `final` after it."""
    if step < warmup:
        return start + (base - start) * step / max(warmup - 1, 1)
    decay = min((step - warmup) / max(total - warmup, 1), 1.0)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * decay))
