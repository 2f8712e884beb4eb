"""Options shared by several commands, declared once."""

from __future__ import annotations

import typer

DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Images per batch (deep methods).")
NULL = typer.Option(False, "--null", "-0", help="Paths in a list/stdin are NUL-separated (find -print0).")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or info messages (warnings still shown).")
# Pretrained features (clusterkit.features): fit --backbone, assign of such a model, embed.
WEIGHTS = typer.Option(None, "--weights", help="Backbone weights: a local file or a torchvision weights name.")
CACHE = typer.Option(None, "--cache", help="Feature cache folder (default: the user cache folder).")
NO_CACHE = typer.Option(False, "--no-cache", help="Neither read nor write the feature cache.")
