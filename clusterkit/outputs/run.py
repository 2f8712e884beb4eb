"""The run folder: every file name once, how `fit` writes a run and how later commands read one,
and the rules that keep earlier work from being overwritten."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from clusterkit import console
from clusterkit.errors import InputError
from clusterkit.io import atomic_write, atomic_write_json, atomic_write_text, is_atomic_temp
from clusterkit.outputs.assignments import write_assignments

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "model.ckpt"
STATE_NAME = "train_state.ckpt"
HISTORY_NAME = "history.jsonl"
ASSIGNMENTS_NAME = "assignments.csv"
METRICS_NAME = "metrics.json"
PROBA_NAME = "proba.npy"  # the soft assignments, rows as in assignments.csv: `report` reads them
REPORT_NAME = "report.html"
# The files `fit` writes into a run folder, and only those: --force leaves any other file alone.
RUN_FILES = (
    CONFIG_NAME,
    CHECKPOINT_NAME,
    STATE_NAME,
    HISTORY_NAME,
    ASSIGNMENTS_NAME,
    PROBA_NAME,
    METRICS_NAME,
    REPORT_NAME,  # written by `report`, later: --force removes it with the run it describes
)


def default_run_dir(method: str) -> Path:
    return Path("runs") / f"{method}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass
class RunFolder:
    """One run's folder. `prepare` (or `create_default`) before a fit, `discard_unsaved` after a
    failed one; the readers serve the commands that work on finished runs. `created`: this fit made
    the folder; `existing`: the run-file names that were there before it and are not its own."""

    path: Path
    created: bool = False
    existing: frozenset[str] = frozenset()

    @classmethod
    def create_default(cls, method: str) -> RunFolder:
        """A new folder runs/METHOD-YYYYmmdd-HHMMSS, with -2, -3, ... when fits start in the same
        second: each mkdir either creates the folder or fails, so two fits never share one."""
        base = default_run_dir(method)
        base.parent.mkdir(parents=True, exist_ok=True)
        path, n = base, 1
        while True:
            try:
                path.mkdir()
                return cls(path, created=True)
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")

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

    @property
    def proba(self) -> Path:
        return self.path / PROBA_NAME

    def is_run(self) -> bool:
        return self.config.is_file()

    def holds_checkpoint(self) -> bool:
        """Whether a run has saved anything to resume or use: a model, or a training state."""
        return self.checkpoint.is_file() or self.state.is_file()

    def prepare(self, resume: bool, force: bool) -> None:
        """Refuse to write into a folder holding other files, or to silently replace a previous run.
        --force in a previous run (a folder with config.yaml) removes that run's files, since a stale
        history or training state would otherwise be appended to or resumed from later; in any other
        folder it removes nothing. Temporary files of a write killed midway are removed either way."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {path} exists and is not a folder")
        if resume:
            if not self.is_run():
                raise InputError(f"--resume: {path} is not a previous run (no {CONFIG_NAME})")
            return
        try:
            path.mkdir(parents=True)
            self.created = True
            return
        except FileExistsError:  # a folder (a file at `path` was refused above)
            pass
        strays = self._stray_temps()
        if not force and any(p.name not in strays for p in path.iterdir()):
            if self.is_run():
                raise InputError(
                    f"--out {path} holds a previous run; use --resume to continue it, or --force to overwrite it"
                )
            raise InputError(f"--out {path} exists and is not empty; use --force to write into it anyway")
        if self.is_run():
            self._remove_run_files()
        for name in strays:
            (path / name).unlink(missing_ok=True)
        self.existing = frozenset(name for name in RUN_FILES if (path / name).exists())

    def discard_unsaved(self) -> None:
        """After a fit that failed before saving anything: remove what it wrote (its config, a history
        of no use without a checkpoint) so that a retry with the same --out is not refused as a
        previous run, and the folder if this fit created it. A run with a checkpoint is kept for --resume."""
        if any((self.path / name).is_file() for name in {CHECKPOINT_NAME, STATE_NAME} - self.existing):
            return
        self._remove_run_files(keep=self.existing)
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def _remove_run_files(self, keep: frozenset[str] = frozenset()) -> None:
        for name in RUN_FILES:
            if name not in keep:
                (self.path / name).unlink(missing_ok=True)

    def _stray_temps(self) -> set[str]:
        """Temporary files that a write of a run file killed midway (kill -9) left in the folder."""
        return {p.name for p in self.path.iterdir() if any(is_atomic_temp(p.name, name) for name in RUN_FILES)}

    # --- writing --------------------------------------------------------------------------
    def write_config(self, resolved: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(resolved, sort_keys=False))

    def write_outputs(
        self,
        paths: list[str],
        proba: np.ndarray,
        labels: np.ndarray,
        metrics: dict[str, Any],
        columns: dict[str, Sequence] | None = None,
    ) -> None:
        buffer = io.StringIO()
        write_assignments(buffer, paths, proba, labels, columns=columns)
        atomic_write_text(self.assignments, buffer.getvalue())
        atomic_write(self.proba, lambda fh: np.save(fh, proba.astype(np.float32)), binary=True)
        atomic_write_json(self.metrics, metrics)  # last: a run with metrics.json has all its outputs

    # --- reading --------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        if not self.is_run():
            raise InputError(f"{self.path} is not a clusterkit run (no {CONFIG_NAME})")
        return yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}

    def read_metrics(self) -> dict[str, Any]:
        if not self.metrics.is_file():
            raise InputError(f"{self.path} holds no {METRICS_NAME}: the fit did not finish")
        try:
            return json.loads(self.metrics.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.metrics} is damaged ({exc}); fit the run again") from None

    def read_history(self) -> list[dict[str, Any]]:
        """The per-epoch records of a trained method; none for a method fitted in one go."""
        if not self.history.is_file():
            return []
        records = []
        for number, line in enumerate(self.history.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short when a fit was killed mid-write
                if line.strip():
                    console.warn(f"{self.history}, line {number}, is damaged: the curves stop before it")
                    break
        return records

    def read_proba(self, rows: int) -> np.ndarray:
        """The soft assignments of the training images (N x k), checked against the table's rows."""
        if not self.proba.is_file():
            raise InputError(f"{self.path} holds no {PROBA_NAME}: it was written by an older clusterkit; fit it again")
        try:
            proba = np.load(self.proba, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.proba} is damaged ({exc}); fit the run again") from None
        if proba.ndim != 2 or len(proba) != rows:
            raise InputError(f"{self.proba} does not match {ASSIGNMENTS_NAME} ({rows} rows); fit the run again")
        return proba

    def source_root(self) -> Path | None:
        """The absolute folder that the run's file names are relative to (metrics.json), None for a
        built-in set: what `report` and `export` open the images with."""
        metrics = self.read_metrics()
        if "source" not in metrics:
            raise InputError(
                f"{self.path} was written by an older clusterkit that did not record its source; fit it again"
            )
        root = metrics.get("source_root")
        return None if root is None else Path(root)
