"""Run folders: what `fit` writes, and the rules that keep earlier work from being overwritten."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .assignments import write_assignments
from .errors import InputError
from .io import atomic_write_json, atomic_write_text

CONFIG_NAME = "config.yaml"
ASSIGNMENTS_NAME = "assignments.csv"
METRICS_NAME = "metrics.json"
# A cluster is reported as collapse when it holds more than halfway from its fair share (1/k of the
# images) to all of them: 55% at k = 10, 75% at k = 2, where one cluster always holds at least half.
COLLAPSE_WAY = 0.5


def default_run_dir(method: str) -> Path:
    return Path("runs") / f"{method}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file()


def run_files() -> tuple[str, ...]:
    """The files `fit` writes into a run folder (and only those: --force leaves other files alone)."""
    from .checkpoint import CHECKPOINT_NAME
    from .engine.history import HISTORY_NAME
    from .engine.state import STATE_NAME

    return (CONFIG_NAME, CHECKPOINT_NAME, STATE_NAME, HISTORY_NAME, ASSIGNMENTS_NAME, METRICS_NAME)


def remove_run_files(path: Path) -> None:
    for name in run_files():
        (path / name).unlink(missing_ok=True)


def holds_checkpoint(path: Path) -> bool:
    """Whether a run has saved anything to resume or use: a model, or a training state."""
    from .checkpoint import CHECKPOINT_NAME
    from .engine.state import STATE_NAME

    return any((path / name).is_file() for name in (CHECKPOINT_NAME, STATE_NAME))


def discard_unsaved_run(path: Path) -> None:
    """After a fit that failed before saving anything: remove what it wrote (its config, a history
    of no use without a checkpoint) and the folder if that leaves it empty, so that a retry with the
    same --out is not refused as a previous run. A run with a checkpoint is kept for --resume."""
    if holds_checkpoint(path):
        return
    remove_run_files(path)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def prepare_run_dir(path: Path, resume: bool, force: bool) -> None:
    """Refuse to write into a folder holding other files, or to silently replace a previous run.
    --force replaces a previous run's files (a stale history or training state would otherwise be
    appended to or resumed from later) and keeps any other file."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path} exists and is not a folder")
    if resume:
        if not is_run_dir(path):
            raise InputError(f"--resume: {path} is not a previous run (no {CONFIG_NAME})")
        return
    if path.is_dir() and any(path.iterdir()) and not force:
        if is_run_dir(path):
            raise InputError(f"--out {path} holds a previous run; use --resume to continue it, or --force to overwrite it")
        raise InputError(f"--out {path} exists and is not empty; use --force to write into it anyway")
    if force:
        remove_run_files(path)
    path.mkdir(parents=True, exist_ok=True)


def write_config(path: Path, resolved: dict[str, Any]) -> None:
    atomic_write_text(path / CONFIG_NAME, yaml.safe_dump(resolved, sort_keys=False))


def cluster_sizes(clusters: np.ndarray, k: int) -> list[int]:
    return np.bincount(clusters, minlength=k).astype(int).tolist()


def collapse_warning(sizes: list[int]) -> str | None:
    """Collapse is deep clustering's most common failure: empty clusters or one giant cluster."""
    total = sum(sizes)
    empty = sum(1 for s in sizes if s == 0)
    if empty:
        return f"{empty} of {len(sizes)} clusters are empty (sizes {sizes})"
    fair = 1.0 / len(sizes)
    if total and max(sizes) > (fair + COLLAPSE_WAY * (1.0 - fair)) * total:
        return f"one cluster holds {max(sizes) / total:.0%} of the images (sizes {sizes})"
    return None


def write_run_outputs(
    path: Path, paths: list[str], proba: np.ndarray, labels: np.ndarray | None, metrics: dict[str, Any]
) -> None:
    buffer = io.StringIO()
    write_assignments(buffer, paths, proba, labels)
    atomic_write_text(path / ASSIGNMENTS_NAME, buffer.getvalue())
    atomic_write_json(path / METRICS_NAME, metrics)

