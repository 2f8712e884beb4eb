"""`clusterkit assign`: cluster images with a saved model; the table goes to stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from . import options




def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(assign)


def assign(
    source: str = typer.Argument(..., metavar="SOURCE", help="Folder, .txt list, '-' (stdin) or builtin:NAME."),
    model: Path = typer.Option(..., "--model", help="Run folder or model.ckpt written by `fit`."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv, json or jsonl."),
    output: str = typer.Option("-", "--output", help="File to write, or - for stdout."),
    probs: bool = typer.Option(False, "--probs", help="Add p0..p{k-1}: the soft assignment."),
    device: str = options.DEVICE,
    batch_size: Optional[int] = options.BATCH_SIZE,
    null: bool = options.NULL,
    quiet: bool = options.QUIET,
) -> None:
    """Assign each image of SOURCE to a cluster of a fitted model, in input order."""
    import io

    from clusterkit import console
    from clusterkit.assignments import write_assignments
    from clusterkit.checkpoint import load_model
    from clusterkit.data import load_images
    from clusterkit.errors import InputError
    from clusterkit.io import atomic_write_text

    console.set_quiet(quiet)
    if fmt not in ("csv", "json", "jsonl"):
        raise InputError(f"--format must be csv, json or jsonl, got {fmt!r}")
    fitted = load_model(model, device=device, batch_size=batch_size)
    channels, height, width = fitted.image_shape_
    images = load_images(source, image_size=(height, width), channels=channels, null=null)
    proba = fitted.predict_proba(images)
    if output == "-":
        if hasattr(sys.stdout, "reconfigure"):  # file names that are not UTF-8 go out as their own bytes
            sys.stdout.reconfigure(errors="surrogateescape")
        write_assignments(sys.stdout, images.paths, proba, fmt=fmt, probs=probs)
    else:
        buffer = io.StringIO()
        write_assignments(buffer, images.paths, proba, fmt=fmt, probs=probs)
        atomic_write_text(output, buffer.getvalue())
