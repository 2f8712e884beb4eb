"""`clusterkit evaluate`: score assignments against ground-truth labels."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(evaluate)


def evaluate(
    assignments: Path = typer.Argument(
        ..., metavar="ASSIGNMENTS", help="CSV with path,cluster (from `fit` or `assign`)."
    ),
    labels: Path = typer.Option(..., "--labels", help="CSV with path,label."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Score only the paths in both files."),
) -> None:
    """Print ACC (Hungarian), NMI, ARI and purity of ASSIGNMENTS against LABELS."""
    from clusterkit.workflows.evaluate import evaluate_files

    result = evaluate_files(assignments, labels, allow_missing=allow_missing)
    if as_json:
        typer.echo(json.dumps(result))
        return
    width = max(map(len, result))
    for key, value in result.items():
        typer.echo(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
