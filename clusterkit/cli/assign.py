"""`clusterkit assign`: cluster images with a saved model; the table goes to stdout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clusterkit.cli import options


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(assign)


def assign(
    source: str = typer.Argument(..., metavar="SOURCE", help="Folder, .txt list, '-' (stdin) or builtin:NAME."),
    model: Path = typer.Option(..., "--model", help="Run folder or model.ckpt written by `fit`."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, json or jsonl."),
    output: str = typer.Option("-", "--output", help="File to write, or - for stdout."),
    probs: bool = typer.Option(False, "--probs", help="Add p0..p{k-1}: the soft assignment."),
    energy: bool = typer.Option(
        False, "--energy", help="Add energy: how unlike the training data each image is (gedi models)."
    ),
    device: str = options.DEVICE,
    batch_size: Optional[int] = options.BATCH_SIZE,
    weights: Optional[str] = options.WEIGHTS,
    cache: Optional[Path] = options.CACHE,
    no_cache: bool = options.NO_CACHE,
    null: bool = options.NULL,
    quiet: bool = options.QUIET,
) -> None:
    """Assign each image of SOURCE to a cluster of a fitted model, in input order."""
    from clusterkit import console
    from clusterkit.workflows.assign import assign as assign_source
    from clusterkit.workflows.assign import check_output, write_assignment

    console.set_quiet(quiet)
    check_output(output, fmt)
    result = assign_source(
        source,
        model,
        device=device,
        batch_size=batch_size,
        nul_separated=null,
        weights=weights,
        cache=cache,
        use_cache=not no_cache,
        energy=energy,
    )
    write_assignment(result, output=output, fmt=fmt, probs=probs)
