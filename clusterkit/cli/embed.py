"""`clusterkit embed`: a backbone's features of a SOURCE (or one shard of it) as an npz; `--merge`
joins the shards."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clusterkit.cli import options


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(embed)


def embed(
    inputs: list[str] = typer.Argument(
        ..., metavar="SOURCE | SHARD.npz...", help="Folder, .txt list, '-' or builtin:NAME; with --merge, the shards."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The .npz to write: features, paths, backbone identity."),
    backbone: Optional[str] = typer.Option(
        None, "--backbone", help="Backbone name (efficientnet_lite0, resnet50, timm:NAME, ...)."
    ),
    weights: Optional[str] = options.WEIGHTS,
    shard: Optional[str] = typer.Option(None, "--shard", help="Embed shard I of N (0-based, as RANK): I/N."),
    merge: bool = typer.Option(False, "--merge", help="Join the shard files given into --out."),
    cache: Optional[Path] = options.CACHE,
    no_cache: bool = options.NO_CACHE,
    device: str = options.DEVICE,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per forward pass (default 64)."),
    null: bool = options.NULL,
    quiet: bool = options.QUIET,
) -> None:
    """Embed images with a pretrained backbone; prints the file written as the last line of stdout."""
    from clusterkit import console
    from clusterkit.errors import InputError
    from clusterkit.workflows.embed import EmbedRequest, merge_files, run_embed

    console.set_quiet(quiet)
    if merge:
        if backbone or shard:
            raise InputError("--merge joins finished shards: leave out --backbone and --shard")
        features = merge_files([Path(name) for name in inputs], out)
    else:
        if len(inputs) != 1:
            raise InputError(f"give one SOURCE (got {len(inputs)}); to join shard files, add --merge")
        if not backbone:
            raise InputError("--backbone is required (efficientnet_lite0, resnet50, timm:NAME, ...)")
        request = EmbedRequest(
            inputs[0],
            backbone,
            weights=weights,
            cache=cache,
            use_cache=not no_cache,
            device=device,
            batch_size=batch_size,
            shard=shard,
            nul_separated=null,
        )
        features = run_embed(request, out)
    console.info(f"{len(features)} feature vectors of {features.sample_shape[0]} values written to {out}")
    typer.echo(str(out))
