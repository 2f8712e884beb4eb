"""What a method hands the trainer: its phases, each a loss of a batch plus optional hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from clusterkit.engine.batches import Batch, DeviceData
from clusterkit.engine.distributed import DistEnv

LossFn = Callable[[nn.Module, Any], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class EpochContext:
    """Passed to `Phase.batches` and `Phase.on_epoch_end`: where training stands, this epoch's
    shuffle seed, and the epoch's batches over any rows (a method needs no handle on the Trainer)."""

    phase: str
    epoch: int
    seed: int
    data: DeviceData
    env: DistEnv

    def shuffled(self, batch_size: int, rows: torch.Tensor | None = None) -> Iterator[Batch]:
        """This epoch's seeded shuffle of `rows` (default: every sample), this rank's shard."""
        return self.data.shuffled(batch_size, self.seed, self.env, rows)


@dataclass
class Phase:
    """One stage of training (pretraining, clustering, ...), run for up to `epochs` epochs.

    Each epoch the trainer iterates `batches(ctx)` (default: every image once, shuffled, `batch_size`
    per step across all ranks, as `data.Batch`), calls `loss(module, batch)` and takes one optimizer
    step on `terms["loss"]`; the other terms are logged. `module` is the part trained in this phase
    (DistributedDataParallel-wrapped under torchrun): call it exactly once per step; for extra
    passes without gradients call the unwrapped module (which the method holds anyway).

    Hooks, all optional: `on_start()` once when the phase begins (not again on resume: its effect is
    in the checkpoint), e.g. k-means initialisation or first targets; `on_epoch_end(ctx)` after each
    epoch, e.g. a target update, returning True to end the phase early (converged); `assign()` the
    current cluster of every image, used only to log ACC/NMI/ARI when ground truth is known.
    Per-step extension points, all optional, for schedules that count optimizer steps rather than
    epochs (SwAV's and IICC's): `lr_schedule(step)` sets every parameter group's learning rate
    before step `step` (0-based, counted over the whole phase and resumed with it; e.g.
    `engine.optim.warmup_cosine`); `frozen(step)` names parameters whose gradient is dropped at that
    step (SwAV keeps its prototypes fixed for the first iterations); `on_step(step)` runs before the
    step's forward pass (e.g. projecting prototypes back onto the unit sphere).
    Divergence guard: a non-finite loss always stops the run, and so does |loss| > `max_loss` where
    set (an energy-based model's loss explodes before it turns NaN; JEM stops at 1e8). The step is
    not taken, the checkpoint of the last finished epoch stays as it was (a resume starts there),
    and the error names both.
    A method whose unit is not "an epoch of shuffled batches" (GATCluster's outer iterations: a big
    batch, no-grad targets, then sub-batch passes) supplies `batches` as a generator: it may compute
    targets without gradients between yields, and yields whatever its `loss` takes.
    """

    name: str
    epochs: int
    loss: LossFn
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    module: nn.Module | None = None
    batch_size: int = 256
    scheduler: Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler] | None = None
    on_start: Callable[[], None] | None = None
    on_epoch_end: Callable[[EpochContext], bool | None] | None = None
    batches: Callable[[EpochContext], Iterable[Any]] | None = None
    assign: Callable[[], np.ndarray] | None = None
    max_loss: float | None = None
    lr_schedule: Callable[[int], float] | None = None
    frozen: Callable[[int], Iterable[nn.Parameter]] | None = None
    on_step: Callable[[int], None] | None = None
