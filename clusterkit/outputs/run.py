"""The run folder: every file name once, how `fit` writes a run and how later commands read one,
and the rules that keep earlier work from being overwritten."""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from clusterkit.errors import InputError
from clusterkit.io import atomic_write_json, atomic_write_text
from clusterkit.outputs.assignments import write_assignments

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "model.ckpt"
STATE_NAME = "train_state.ckpt"
HISTORY_NAME = "history.jsonl"
ASSIGNMENTS_NAME = "assignments.csv"
METRICS_NAME = "metrics.json"
# The files `fit` writes into a run folder, and only those: --force leaves any other file alone.
RUN_FILES = (CONFIG_NAME, CHECKPOINT_NAME, STATE_NAME, HISTORY_NAME, ASSIGNMENTS_NAME, METRICS_NAME)


def default_run_dir(method: str) -> Path:
    return Path("runs") / f"{method}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunFolder:
    """One run's folder. `prepare` before a fit, `discard_unsaved` after a failed one; the readers
    serve the commands that work on finished runs."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def state(self) -> Path:
        return self.path / STATE_NAME

    @property
    def history(self) -> Path:
        return self.path / HISTORY_NAME

    @property
    def assignments(self) -> Path:
        return self.path / ASSIGNMENTS_NAME

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_NAME

    def is_run(self) -> bool:
        return self.config.is_file()

    def holds_checkpoint(self) -> bool:
        """Whether a run has saved anything to resume or use: a model, or a training state."""
        return self.checkpoint.is_file() or self.state.is_file()

    def prepare(self, resume: bool, force: bool) -> None:
        """Refuse to write into a folder holding other files, or to silently replace a previous run.
        --force replaces a previous run's files (a stale history or training state would otherwise be
        appended to or resumed from later) and keeps any other file."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {path} exists and is not a folder")
        if resume:
            if not self.is_run():
                raise InputError(f"--resume: {path} is not a previous run (no {CONFIG_NAME})")
            return
        if path.is_dir() and any(path.iterdir()) and not force:
            if self.is_run():
                raise InputError(
                    f"--out {path} holds a previous run; use --resume to continue it, or --force to overwrite it"
                )
            raise InputError(f"--out {path} exists and is not empty; use --force to write into it anyway")
        if force:
            self._remove_run_files()
        path.mkdir(parents=True, exist_ok=True)

    def discard_unsaved(self) -> None:
        """After a fit that failed before saving anything: remove what it wrote (its config, a history
        of no use without a checkpoint) and the folder if that leaves it empty, so that a retry with the
        same --out is not refused as a previous run. A run with a checkpoint is kept for --resume."""
        if self.holds_checkpoint():
            return
        self._remove_run_files()
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def _remove_run_files(self) -> None:
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    # --- writing --------------------------------------------------------------------------
    def write_config(self, resolved: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(resolved, sort_keys=False))

    def write_outputs(self, paths: list[str], proba: np.ndarray, labels: np.ndarray, metrics: dict[str, Any]) -> None:
        buffer = io.StringIO()
        write_assignments(buffer, paths, proba, labels)
        atomic_write_text(self.assignments, buffer.getvalue())
        atomic_write_json(self.metrics, metrics)

    # --- reading --------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        if not self.is_run():
            raise InputError(f"{self.path} is not a clusterkit run (no {CONFIG_NAME})")
        return yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics.is_file():
            raise InputError(f"{self.path} holds no {METRICS_NAME}: the fit did not finish")
        return json.loads(self.metrics.read_text(encoding="utf-8"))
