"""Seeds and random-number states: same seed and device give the same run, and a resumed run
continues the exact random streams of the interrupted one."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Cheap on CPU; on CUDA only the autotuner is turned off (fully deterministic CUDA kernels cost
    # too much speed and need CUBLAS_WORKSPACE_CONFIG set before CUDA starts).
    torch.backends.cudnn.benchmark = False
    if not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)


def derived_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (seed, phase, epoch): shuffles need no stored generator."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


def capture_rng() -> dict[str, Any]:
    """All global RNG states as tensors and plain data (checkpoints load with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # A resume may see fewer GPUs than the run that saved the states: restore those that exist.
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def _as_tuple(value: Any) -> Any:
    """random.setstate needs tuples all the way down; serialization may hand back lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
