"""Methods by name and from checkpoints (as timm's `create_model(name, checkpoint_path=...)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterkit.engine.device import check_device
from clusterkit.errors import InputError
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.registry import get_method_class
from clusterkit.outputs.checkpoint import read_checkpoint


def create_method(name: str, **params: Any) -> ClusterMethod:
    """An unfitted method by registry name, e.g. `create_method("depict", k=10, seed=0)`."""
    return get_method_class(name)(**params)


def load_model(path: str | Path, device: str = "auto", batch_size: int | None = None) -> ClusterMethod:
    """The fitted model of a checkpoint; `device` and `batch_size` only change how it predicts."""
    check_device(device)  # before the checkpoint, so that its error is not taken for the model's
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    path, payload = read_checkpoint(path)
    method = payload.get("method")
    try:
        model = create_method(
            str(method), k=payload["k"], seed=payload.get("seed", 0), device=device, **payload["config"]
        )
    except InputError as exc:
        raise InputError(f"checkpoint {path} does not fit this clusterkit's {method}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise InputError(f"checkpoint {path} is damaged: {type(exc).__name__} {exc}") from None
    if batch_size is not None:
        model.predict_batch_size = batch_size
    try:
        k = payload["k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(f"k {k!r}, not an integer >= 2")
        model.k_ = k
        header = payload["input"]
        if header["kind"] not in model.input_kinds:
            raise ValueError(f"input kind {header['kind']!r}, the method takes {' or '.join(model.input_kinds)}")
        model.input_kind_ = header["kind"]
        model.backbone_ = header.get("backbone")
        if (model.input_kind_ == "features") != isinstance(model.backbone_, dict):
            raise ValueError("features without the identity of their backbone")
        model.input_shape_ = tuple(int(s) for s in header["shape"])
        model.file_kinds_ = header.get("file_kinds")
        if (model.input_kind_ == "volumes") != isinstance(model.file_kinds_, list):
            raise ValueError(f"volumes without the kinds of file they were fitted on ({model.file_kinds_!r})")
        if not set(model.file_kinds_ or []) <= {"image", "volume"}:
            raise ValueError(f"unknown kinds of file {model.file_kinds_!r}")
        model.load_state_dict(payload["state"])
        model._check_state()  # arrays that disagree with the recorded k or input shape
        model.fitted_ = True
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a damaged or hand-edited checkpoint
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(
            f"checkpoint {path} is damaged or does not match its {method} model: {type(exc).__name__} {reason}"
        ) from None
    return model
