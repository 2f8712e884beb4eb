"""Logs and progress on stderr (Rich): bars only on a terminal and never with --quiet; NO_COLOR respected."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_state: dict[str, Any] = {"quiet": False, "console": None}


def stderr_console() -> Console:
    if _state["console"] is None:
        _state["console"] = Console(
            stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False
        )  # set and non-empty (no-color.org)
    return _state["console"]


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return bool(_state["quiet"])


def info(message: str) -> None:
    """One line however long (soft wrap), so that logs stay greppable line by line."""
    if not is_quiet():
        stderr_console().print(message, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    """Warnings are shown even with --quiet: they tell the user something went wrong."""
    stderr_console().print(f"warning: {message}", markup=False, style="yellow", soft_wrap=True)


def show_progress() -> bool:
    return not is_quiet() and sys.stderr.isatty()


class ProgressTask:
    """One bar: `advance(n, **fields)` moves it and updates the text fields (loss terms, speed)."""

    def __init__(self, progress: Progress | None, task_id: Any) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, advance=n, **({"info": _fmt(fields)} if fields else {}))

    def reset(self, total: int | None, description: str) -> None:
        if self._progress is not None:
            self._progress.reset(self._task_id, total=total, description=description)


def _fmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[ProgressTask]:
    """A Rich progress bar on stderr, or a silent stand-in when stderr is not a terminal."""
    if not show_progress():
        yield ProgressTask(None, None)
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=stderr_console(),
        transient=True,
    )
    with bar:
        yield ProgressTask(bar, bar.add_task(description, total=total, info=""))
