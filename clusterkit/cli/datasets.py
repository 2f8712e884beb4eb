"""`clusterkit datasets`: the built-in data sets, and exporting them as image folders."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Built-in data sets.", no_args_is_help=True)


@app.command("list")
def list_datasets() -> None:
    """List the built-in data sets (use them as builtin:NAME)."""
    from clusterkit.data.builtin import BUILTINS

    for name, (_, description) in BUILTINS.items():
        typer.echo(f"{name:<16} {description}")


@app.command(no_args_is_help=True)
def export(
    name: str = typer.Argument(..., metavar="NAME", help="Built-in data set, e.g. digits."),
    folder: Path = typer.Argument(
        ...,
        metavar="FOLDER",
        help="Writes FOLDER/images/*.png and FOLDER/labels.csv; FOLDER must be new or empty.",
    ),
    scale: int = typer.Option(1, "--scale", min=1, help="Upsample each side by this factor (e.g. 12 -> 96x96)."),
    rgb: bool = typer.Option(False, "--rgb", help="Save 3-channel PNGs."),
) -> None:
    """Write a built-in data set as PNG files plus labels.csv into a new or empty folder; prints it."""
    from clusterkit.data.builtin import BUILTINS
    from clusterkit.data.builtin_export import export_builtin
    from clusterkit.errors import InputError

    if name not in BUILTINS:
        raise InputError(f"unknown built-in data set {name!r}; available: {', '.join(BUILTINS)}")
    export_builtin(name, folder, scale=scale, rgb=rgb)
    typer.echo(str(folder))
