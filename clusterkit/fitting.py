"""One fit, end to end: resolve settings, load images, train, write the run folder.

The CLI's `fit` is this function plus printing; Python users can call `run_fit` directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import console
from .checkpoint import CHECKPOINT_NAME
from .config import config_to_dict, load_config_file, parse_set_options
from .data import ImageSet, load_images
from .data.labels import match_labels, read_labels
from .engine import is_main_process
from .errors import InputError
from .methods.base import ClusterMethod, FitContext
from .methods.registry import get_method_class
from .metrics import ari, cluster_acc, nmi
from .runs import (
    CONFIG_NAME,
    cluster_sizes,
    collapse_warning,
    default_run_dir,
    discard_unsaved_run,
    prepare_run_dir,
    write_config,
    write_run_outputs,
)

RUN_KEYS = ("method", "k", "seed")


@dataclass
class FitRequest:
    source: str
    method: str | None = None
    k: str | int | None = None
    out: Path | None = None
    config_file: Path | None = None
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    seed: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    labels: Path | None = None
    resume: bool = False
    force: bool = False
    null: bool = False


@dataclass
class FitResult:
    run_dir: Path
    model: ClusterMethod
    metrics: dict[str, Any]


def parse_k(value: str | int | None) -> int | str:
    if value is None:
        raise InputError("--k is required (an integer >= 2, or 'auto')")
    if (isinstance(value, int) and not isinstance(value, bool)) or value == "auto":
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise InputError(f"--k must be an integer >= 2 or 'auto', got {value!r}")


def resolve_settings(request: FitRequest) -> tuple[str, int | str, int, dict[str, Any]]:
    """method, k, seed and method options, from (lowest first) config file, flags, --set."""
    settings: dict[str, Any] = {}
    config_file = request.config_file
    if config_file is None and request.resume and request.out is not None and (request.out / CONFIG_NAME).is_file():
        config_file = request.out / CONFIG_NAME
    if config_file is not None:
        settings.update(load_config_file(config_file))
        saved = settings.get("method")
        if request.resume and request.method and saved and request.method != saved:
            raise InputError(f"--resume: {request.out} is a {saved} run; leave out --method, or give --method {saved}")
    flags = {"method": request.method, "k": request.k, "seed": request.seed, "epochs": request.epochs,
             "batch_size": request.batch_size}
    settings.update({key: value for key, value in flags.items() if value is not None})
    settings.update(parse_set_options(request.overrides))
    method = settings.pop("method", None)
    if not method:
        raise InputError("--method is required (see `clusterkit methods`)")
    k = parse_k(settings.pop("k", None))
    seed = settings.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"--seed must be an integer, got {seed!r}")
    cls = get_method_class(str(method))
    for flag in ("epochs", "batch_size"):
        if flags[flag] is not None and flag not in cls.Config.__dataclass_fields__:  # --set: build_config says
            raise InputError(f"--{flag.replace('_', '-')} does not apply to {method}: it has no {flag} option")
    return str(method), k, seed, settings


def ground_truth(images: ImageSet, labels_file: Path | None) -> list[str] | None:
    if labels_file is not None:
        return match_labels(images.paths, read_labels(labels_file))
    return images.labels


def run_fit(request: FitRequest) -> FitResult:
    method, k, seed, options = resolve_settings(request)
    model = get_method_class(method)(k=k, seed=seed, device=request.device, **options)
    cfg = model.config
    images = load_images(request.source, image_size=cfg.image_size, channels=cfg.channels,
                         max_image_size=cfg.max_image_size, null=request.null)
    truth = ground_truth(images, request.labels)
    # Labels from --labels join the images too, so that training history scores each epoch with them.
    images = replace(images, labels=truth)
    model.check_k(len(images))
    run_dir = request.out or default_run_dir(method)
    primary = is_main_process()  # under torchrun only rank 0 writes files
    settings = {"method": method, "k": k, "seed": seed, **config_to_dict(cfg)}
    if primary:
        prepare_run_dir(run_dir, resume=request.resume, force=request.force)
        if not request.resume:
            write_config(run_dir, settings)
    console.info(f"fitting {method} (k={k}) on {len(images)} images of {images.channels}x{images.size[0]}x{images.size[1]}")
    start = time.perf_counter()
    try:
        model.fit(images, FitContext(run_dir=run_dir if primary else None, resume=request.resume))
    except BaseException:
        if primary and not request.resume:
            discard_unsaved_run(run_dir)
        raise
    seconds = time.perf_counter() - start
    if primary and request.resume:  # only once the checkpoint has accepted these settings
        write_config(run_dir, settings)
    proba = model.predict_proba(images)
    fixed = model.training_labels_
    clusters = proba.argmax(axis=1) if fixed is None else np.asarray(fixed)
    sizes = cluster_sizes(clusters, int(model.k_))
    metrics: dict[str, Any] = {
        "method": method,
        "k": int(model.k_),
        "n_images": len(images),
        "n_skipped": len(images.skipped),
        "cluster_sizes": sizes,
        "seconds": round(seconds, 3),
        "device": getattr(model, "device_", "cpu"),
        "seed": seed,
    }
    if truth is not None:
        metrics.update(acc=cluster_acc(truth, clusters), nmi=nmi(truth, clusters), ari=ari(truth, clusters))
    metrics.update(model.fit_info())
    warning = collapse_warning(sizes)
    if warning:
        console.warn(f"possible collapse: {warning}")
    if primary:
        model.save(run_dir / CHECKPOINT_NAME)
        write_run_outputs(run_dir, images.paths, proba, fixed, metrics)
    return FitResult(run_dir=run_dir, model=model, metrics=metrics)
