"""`clusterkit fit`: learn clusters from a SOURCE and write a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from clusterkit.cli import options


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(fit)


def fit(
    source: str = typer.Argument(..., metavar="SOURCE", help="Folder, .txt list, '-' (stdin) or builtin:NAME."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Method name (see `clusterkit methods`)."),
    k: Optional[str] = typer.Option(None, "--k", help="Number of clusters (>= 2), or 'auto' where supported."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/METHOD-TIME)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of options (e.g. a run's config.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override one option: KEY=VALUE (repeatable)."),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="A named set of the method's options, e.g. paper (see `clusterkit methods NAME`)."
    ),
    device: str = options.DEVICE,
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (deep methods)."),
    batch_size: Optional[int] = options.BATCH_SIZE,
    labels: Optional[Path] = typer.Option(None, "--labels", help="path,label CSV: adds ACC/NMI/ARI to metrics."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Write into --out even if it holds other files."),
    backbone: Optional[str] = typer.Option(
        None,
        "--backbone",
        help="Cluster this pretrained backbone's features (kmeans, spectral, gmm): efficientnet_lite0, resnet50, timm:NAME, ...",
    ),
    weights: Optional[str] = options.WEIGHTS,
    cache: Optional[Path] = options.CACHE,
    no_cache: bool = options.NO_CACHE,
    null: bool = options.NULL,
    quiet: bool = options.QUIET,
) -> None:
    """Fit a clustering method; prints the run folder as the last line of stdout."""
    from clusterkit import console
    from clusterkit.workflows.fit import FitRequest, run_fit

    console.set_quiet(quiet)
    request = FitRequest(
        source=source,
        method=method,
        k=k,
        out=out,
        config_file=config,
        overrides=set_,
        preset=preset,
        device=device,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        labels=labels,
        resume=resume,
        force=force,
        nul_separated=null,
        backbone=backbone,
        weights=weights,
        cache=cache,
        use_cache=not no_cache,
    )
    result = run_fit(request)
    _print_summary(result.metrics)
    typer.echo(str(result.run_dir))


def _print_summary(metrics: dict[str, Any]) -> None:
    from rich.table import Table

    from clusterkit import console

    if console.is_quiet():
        return
    features = f" ({metrics['backbone']} features)" if "backbone" in metrics else ""
    table = Table(title=f"{metrics['method']} on {metrics['n_images']} images{features}", title_justify="left")
    for key in ("k", "acc", "nmi", "ari", "seconds", "device"):
        if key in metrics:
            table.add_column(key, justify="right")
    table.add_row(
        *(
            f"{metrics[key]:.3f}" if isinstance(metrics[key], float) else str(metrics[key])
            for key in ("k", "acc", "nmi", "ari", "seconds", "device")
            if key in metrics
        )
    )
    console.stderr_console().print(table)
