"""model.ckpt: everything `assign` needs, readable with `torch.load(weights_only=True)`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .config import config_to_dict
from .errors import InputError
from .io import atomic_torch_save

if TYPE_CHECKING:
    from .methods.base import ClusterMethod

FORMAT = "clusterkit-model"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "model.ckpt"


def save_model(model: "ClusterMethod", path: str | Path) -> None:
    atomic_torch_save(
        path,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "clusterkit_version": __version__,
            "method": model.name,
            "k": int(model.k_),
            "seed": int(model.seed),
            "config": config_to_dict(model.config),
            "preprocess": {"channels": model.image_shape_[0], "size": list(model.image_shape_[1:])},
            "state": model.state_dict(),
        },
    )


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise InputError(f"model checkpoint not found: {path}")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise InputError(f"cannot read checkpoint {path}: not a clusterkit model ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path} is not a clusterkit model checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} has checkpoint format version {payload.get('format_version')}, this clusterkit reads "
            f"version {FORMAT_VERSION}; refit the model with clusterkit {__version__}"
        )
    return payload


def load_model(path: str | Path, device: str = "auto", batch_size: int | None = None) -> "ClusterMethod":
    """The fitted model of a checkpoint; `device` and `batch_size` only change how it predicts."""
    from .engine.device import check_device
    from .methods.registry import get_method_class

    check_device(device)  # before the checkpoint, so that its error is not taken for the model's
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    payload = read_checkpoint(path)
    method = payload.get("method")
    try:
        cls = get_method_class(str(method))
        model = cls(k=payload["k"], seed=payload.get("seed", 0), device=device, **payload["config"])
    except InputError as exc:
        raise InputError(f"checkpoint {path} does not fit this clusterkit's {method}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise InputError(f"checkpoint {path} is damaged: {type(exc).__name__} {exc}") from None
    if batch_size is not None:
        model.predict_batch_size = batch_size
    try:
        model.k_ = payload["k"]
        pre = payload["preprocess"]
        model.image_shape_ = (int(pre["channels"]), *map(int, pre["size"]))
        model.load_state_dict(payload["state"])
        model.fitted_ = True
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a damaged or hand-edited checkpoint
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"checkpoint {path} is damaged or does not match its {method} model: "
                         f"{type(exc).__name__} {reason}") from None
    return model
