"""model.ckpt: the checkpoint format, readable with `torch.load(weights_only=True)`.

This module knows the format (name, version, the clusterkit that wrote it) and no method: building
a method from a checkpoint is `methods/factory.load_model`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterkit._version import __version__
from clusterkit.errors import InputError
from clusterkit.io import atomic_torch_save
from clusterkit.outputs.run import CHECKPOINT_NAME

FORMAT = "clusterkit-model"
# 2: the input is {"kind", "shape"} (was "preprocess": channels and size); nets under "net".
FORMAT_VERSION = 2


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """`payload` (method, k, seed, config, input, state) with the format's header, atomically."""
    atomic_torch_save(
        path, {"format": FORMAT, "format_version": FORMAT_VERSION, "clusterkit_version": __version__, **payload}
    )


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise InputError(f"model checkpoint not found: {path}")
    return path


def read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint file behind `path` (a run folder or a file) and its payload."""
    import torch

    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  # torch raises many types for a damaged or foreign file
        raise InputError(f"cannot read checkpoint {path}: not a clusterkit model ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a clusterkit model checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} has checkpoint format version {payload.get('format_version')}, this clusterkit reads "
            f"version {FORMAT_VERSION}; refit the model with clusterkit {__version__}"
        )
    return path, payload
