"""torchrun support: ranks from the environment, sharding with padding, gathers that keep gradients.

Single process when RANK/WORLD_SIZE are absent. Under `torchrun --nproc_per_node=N` every rank runs
the same `fit`; the trainer wraps the trained module in DistributedDataParallel, each rank sees
its shard of every epoch, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_os() -> DistEnv:
    """The ranks torchrun put in the environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)


def init_process_group(env: DistEnv, device: torch.device) -> None:
    """gloo on CPU, nccl on CUDA; a no-op for one process or when the caller already did it."""
    if env.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timedelta(minutes=30), **kwargs)


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_active():
        dist.barrier()


def shard(index: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """This rank's part of `index`, padded by wrapping around so every rank gets as many items
    (what DistributedSampler does); `unshard` drops the duplicates again."""
    if not env.enabled:
        return index
    per_rank = -(-len(index) // env.world_size)
    padded = torch.cat([index, index[: per_rank * env.world_size - len(index)]])
    return padded[env.rank :: env.world_size]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice: a loss computed
    on the gathered tensor then gets the gradient of the global loss (DDP averages it back)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, concatenated in rank order; identity for one process.

    Every rank must pass the same shape (the trainer's batches guarantee it). Use it in losses that
    need global batch statistics: cluster frequencies, the entropy of the mean prediction,
    contrastive negatives.
    """
    if not is_active():
        return tensor
    return _GatherWithGrad.apply(tensor)


def unshard(local: torch.Tensor, total: int) -> torch.Tensor:
    """Inverse of `shard` for per-item outputs: every rank gets all `total` rows in input order."""
    if not is_active():
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    # shard() dealt items round-robin: row j of rank r is item j * world + r.
    return torch.stack(parts, dim=1).reshape(-1, *local.shape[1:])[:total]


def is_main_process() -> bool:
    """True on rank 0 or without torchrun: the only process that writes files."""
    return env_from_os().is_main
