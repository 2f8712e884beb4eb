"""`clusterkit report`: one self-contained HTML page that shows a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from clusterkit.cli import options


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(report)


def report(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder written by `fit`."),
    out: Optional[Path] = typer.Option(None, "--out", help="Page to write (default: RUN/report.html)."),
    labels: Optional[Path] = typer.Option(
        None, "--labels", help="CSV with path,label (default: the labels the fit was given, if any)."
    ),
    source: Optional[str] = typer.Option(
        None, "--source", help="Where the run's images are now, if they moved since the fit."
    ),
    device: str = options.DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the page's path."),
    quiet: bool = options.QUIET,
) -> None:
    """Write RUN/report.html: facts, scores, cluster sizes, a map and each cluster's images."""
    from clusterkit import console
    from clusterkit.workflows.report import build_report

    console.set_quiet(quiet)
    result = build_report(run, output=out, labels=labels, source=source, device=device)
    if as_json:
        summary = {"report": str(result.path), "clusters": result.clusters, "images": result.images}
        typer.echo(json.dumps(summary | {"seconds": round(result.seconds, 2)}))
        return
    console.info(f"report of {result.images} images in {result.clusters} clusters, {result.seconds:.1f} s")
    typer.echo(str(result.path))
