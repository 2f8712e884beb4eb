"""Entry point: the Typer app, and the one place where errors become exit codes.

`clusterkit --help` must be instant, so nothing here (or in the command modules' top level)
imports torch; commands import the library inside their bodies.
"""

from __future__ import annotations

import os
import signal
import sys

import typer

from clusterkit.cli import assign, datasets, embed, evaluate, export, fit, methods, report, sample
from clusterkit.errors import ClusterkitError

app = typer.Typer(
    name="clusterkit",
    help="Unsupervised image clustering: fit a model on a folder of images, assign new images, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from clusterkit.cli.version import version_report

        typer.echo(version_report())
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show versions and CUDA status."
    ),
) -> None:
    """clusterkit: unsupervised image clustering."""


fit.register(app)
assign.register(app)
embed.register(app)
evaluate.register(app)
methods.register(app)
report.register(app)
sample.register(app)
export.register(app)
app.add_typer(datasets.app, name="datasets")


def _fail(message: str, code: int) -> int:
    from clusterkit.console import stderr_console

    stderr_console().print(f"error: {message}", markup=False, style="red", soft_wrap=True)
    return code


def _quiet_broken_pipe() -> int:
    """Downstream closed stdout (`| head`): stop quietly with status 1, as click and Python's docs do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def _is_usage_error(exc: Exception) -> bool:
    """Click's own errors (bad option, missing argument); Typer may vendor click, so duck-type them."""
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


class _Terminated:
    """SIGTERM (`timeout`, Slurm, `docker stop`) takes Ctrl-C's path: a KeyboardInterrupt raised where
    the program stands, so a fit cleans up or keeps its checkpoint alike; only the exit code differs."""

    received = False

    @classmethod
    def handle(cls, signum: int, frame: object) -> None:
        if not cls.received:  # a second SIGTERM does not interrupt the cleanup of the first
            cls.received = True
            raise KeyboardInterrupt


def run() -> None:
    previous = signal.signal(signal.SIGTERM, _Terminated.handle)
    try:
        code = _run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


def _run() -> int:
    debug = os.environ.get("CLUSTERKIT_DEBUG") == "1"
    _Terminated.received = False
    try:
        result = app(standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except BrokenPipeError:
        code = _quiet_broken_pipe()
    except ClusterkitError as exc:
        if debug:
            raise
        code = _fail(str(exc), exc.exit_code)
    except Exception as exc:  # anything unexpected: one line, traceback only on request
        if _is_usage_error(exc):
            exc.show()
            code = exc.exit_code
        elif debug:
            raise
        else:
            code = _fail(f"{type(exc).__name__}: {exc} (set CLUSTERKIT_DEBUG=1 for the traceback)", 1)
    if _Terminated.received:
        code = _fail("terminated", 128 + signal.SIGTERM)
    elif code == 130:  # typer turns a KeyboardInterrupt into Exit(130) before it reaches us
        code = _fail("interrupted", 130)
    try:
        if sys.stdout is not None:  # None: started with stdout closed (`>&-`)
            sys.stdout.flush()
    except BrokenPipeError:
        code = _quiet_broken_pipe()
    return code
