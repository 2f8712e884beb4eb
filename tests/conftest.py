"""Shared fixtures: the digits exported once per session, and an in-process CLI runner."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from clusterkit.data.builtin_export import export_builtin


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _user_cache(tmp_path_factory, monkeypatch):
    """No test writes into the real user cache folder (the feature cache's default, platformdirs')."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "user-cache"))


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's digits as DIR/images/*.png + DIR/labels.csv (read-only for tests)."""
    folder = tmp_path_factory.mktemp("digits")
    export_builtin("digits", folder)
    return folder


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `clusterkit ARGS` in this process; returns exit code, stdout and stderr."""
    from clusterkit import console
    from clusterkit.cli.main import run

    def invoke(*args: str, stdin: str | None = None) -> Result:
        monkeypatch.setattr(sys, "argv", ["clusterkit", *map(str, args)])
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        console.set_quiet(False)
        with pytest.raises(SystemExit) as exit_info:
            run()
        captured = capsys.readouterr()
        return Result(int(exit_info.value.code or 0), captured.out, captured.err)

    return invoke
