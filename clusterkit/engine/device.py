"""`--device auto|cpu|cuda|cuda:N` -> a torch.device, with errors a user can act on."""

from __future__ import annotations

import re

import torch

from clusterkit.errors import InputError

_CUDA = re.compile(r"cuda(?::(\d+))?")


def check_device(spec: str) -> None:
    """Refuse a `--device` this machine cannot serve, before any work (and whatever the method)."""
    _cuda_index(spec)


def _cuda_index(spec: str, local_rank: int | None = None) -> int | None:
    """The CUDA device index `spec` means, or None for the CPU; errors a user can act on."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return None
    match = _CUDA.fullmatch(spec)
    if match is None:
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise InputError(f"--device {spec} asked for, but this torch build sees no CUDA GPU; use --device cpu")
    count = torch.cuda.device_count()
    index = int(match.group(1)) if match.group(1) is not None else (local_rank or 0) % count
    if index >= count:
        raise InputError(f"--device {spec}: only {count} CUDA device(s) visible (0..{count - 1})")
    return index


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """`auto` picks CUDA when present; under torchrun a bare `cuda`/`auto` means this rank's GPU."""
    index = _cuda_index(spec, local_rank)
    if index is None:
        return torch.device("cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
