"""RUN/train_state.ckpt: the resume checkpoint, written atomically at every epoch boundary.

It holds the model, optimizer, scheduler and loss-scaler states, where training stands (phase,
epochs done), the method's own training state (e.g. targets), every RNG state and how many history
records belong to it: tensors and plain data only, so it loads with `torch.load(weights_only=True)`.
Boundaries only: an interrupted epoch is redone on resume, which keeps resumed runs bit-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clusterkit.errors import InputError
from clusterkit.io import atomic_torch_save

FORMAT = "clusterkit-train-state"
FORMAT_VERSION = 1


def save_train_state(path: Path, state: dict[str, Any]) -> None:
    atomic_torch_save(path, {"format": FORMAT, "format_version": FORMAT_VERSION, **state})


def load_train_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The saved state, or an InputError saying why this run cannot be resumed from it."""
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} does not exist (start without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  # torch raises many types for a damaged file
        raise InputError(f"cannot resume from {path}: unreadable ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
        raise InputError(f"cannot resume from {path}: not a clusterkit training state of format {FORMAT_VERSION}")
    saved = state["fingerprint"]
    changed = sorted(key for key in set(saved) | set(fingerprint) if saved.get(key) != fingerprint.get(key))
    if changed:
        details = ", ".join(f"{key}: {saved.get(key)!r} -> {fingerprint.get(key)!r}" for key in changed[:4])
        raise InputError(f"cannot resume from {path}: the run's settings differ ({details})")
    return state
