"""Energy-based-model pieces shared by any method whose classifier is also an energy (JEM, GEDI):
the free energy of logits, stochastic-gradient Langevin dynamics, and the persistent replay buffer.

Conventions follow JEM's code (Grathwohl et al. 2020, wgrathwohl/JEM @ 3d01161, `train_wrn_ebm.py`
L203-236): samples live in the network's input space, chains persist across training steps in a
buffer and restart from uniform noise with a small probability, and SGLD uses a step size decoupled
from its noise (not exact Langevin dynamics, whose noise would be sqrt(2 * step)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def free_energy(logits: torch.Tensor) -> torch.Tensor:
    """E(x) = −log Σ_y exp l_y(x): the classifier's logits read as an unnormalised density
    p(x) ∝ exp(−E(x)) (JEM's `CCF`, L72-77). Lower energy: more like the training data."""
    return -torch.logsumexp(logits.float(), dim=1)


def sgld(
    energy: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    steps: int,
    step_size: float,
    noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """`steps` updates x ← x − step_size · ∇ₓ ΣE(x) + noise · ε, ε ~ N(0, I) (JEM L226-231), returned
    detached.

    Full precision (autocast off, whatever the caller runs under): an input gradient in bf16 is
    too coarse for a step of 1. Only x gets a gradient (`torch.autograd.grad`), so the network's
    parameters collect nothing; put the network in eval mode around the call. No clamping: JEM
    clamps only to save images. Memory: one forward and backward of `x` at a time."""
    x = x.detach().float().clone()
    with torch.autocast(device_type=x.device.type, enabled=False):
        for _ in range(steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            step = torch.randn(x.shape, generator=generator, device=x.device).mul_(noise)
            x = (x.detach() - step_size * grad).add_(step)
    return x.detach()


class ReplayBuffer:
    """Persistent SGLD chains (persistent contrastive divergence, JEM L203-216): each training step
    draws `n` chains, runs SGLD from where they stopped and writes them back; a drawn chain restarts
    from uniform noise on [low, high] with probability `reinit`, so the negatives keep covering
    fresh noise and no chain stays stuck in one mode.

    The chains are part of the training state (the trainer's `extra_state`): `--resume` continues
    the same chains. They are held as float16 on the CPU: half the size of float32 in each epoch's
    checkpoint (2 bytes a value: 1,797 8x8 chains take 230 KB, 10,000 28x28 ones 15.7 MB), and an
    uninterrupted run rounds its chains as the resumed one reads them, so both continue alike.
    The rounding (about 1e-3 of the value) is far below SGLD's own noise.
    """

    def __init__(self, size: int, shape: tuple[int, ...], low: float, high: float, reinit: float, seed: int) -> None:
        self.shape = tuple(shape)
        self.low, self.high, self.reinit = float(low), float(high), float(reinit)
        self.chains = self.uniform(size, torch.Generator().manual_seed(seed)).half()

    def __len__(self) -> int:
        return int(self.chains.shape[0])

    def uniform(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n fresh starts, U(low, high), float32 on the CPU."""
        return self.low + (self.high - self.low) * torch.rand((n, *self.shape), generator=generator)

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of `n` random chains and their states (float32, CPU), a `reinit` share restarted."""
        rows = torch.randint(len(self), (n,), generator=generator)
        x = self.chains[rows].float()
        restart = torch.rand(n, generator=generator) < self.reinit
        fresh = self.uniform(n, generator)
        x[restart] = fresh[restart]
        return rows, x

    def update(self, rows: torch.Tensor, x: torch.Tensor) -> None:
        self.chains[rows] = x.detach().to("cpu", torch.float16)

    def state_dict(self) -> dict[str, Any]:
        return {"chains": self.chains}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        chains = state["chains"]
        if tuple(chains.shape[1:]) != self.shape or chains.dtype != torch.float16:
            raise ValueError(f"replay buffer of shape {tuple(chains.shape)}, expected (*, {self.shape})")
        self.chains = chains.clone()
