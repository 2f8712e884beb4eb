"""`fit` as a library verb: resolve settings, load samples, train, write the run folder.

The CLI's `fit` is this function plus printing; Python users call `run_fit` directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clusterkit import console
from clusterkit.config import config_to_dict, load_config_file, parse_set_options
from clusterkit.data import load_images
from clusterkit.data.labels import match_labels, read_labels
from clusterkit.data.samples import Samples
from clusterkit.engine import is_main_process
from clusterkit.engine.context import FitContext
from clusterkit.errors import InputError
from clusterkit.methods.base import ClusterMethod, check_seed
from clusterkit.methods.factory import create_method
from clusterkit.methods.registry import get_method_class
from clusterkit.metrics import label_scores
from clusterkit.outputs.run import CONFIG_NAME, RunFolder, default_run_dir

# A cluster is reported as collapse when it holds more than halfway from its fair share (1/k of the
# images) to all of them: 55% at k = 10, 75% at k = 2, where one cluster always holds at least half.
COLLAPSE_WAY = 0.5


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
    nul_separated: bool = False


@dataclass(frozen=True)
class Settings:
    """A fit's resolved settings: the method, k, seed and the method's own options."""

    method: str
    k: int | str
    seed: int
    options: dict[str, Any]


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


def resolve_settings(request: FitRequest) -> Settings:
    """Method, k, seed and method options, from (lowest first) config file, flags, --set."""
    if request.resume and request.out is None:
        raise InputError("--resume needs --out, the run folder to continue")
    settings: dict[str, Any] = {}
    config_file = request.config_file
    if config_file is None and request.resume and request.out is not None and (request.out / CONFIG_NAME).is_file():
        config_file = request.out / CONFIG_NAME
    if config_file is not None:
        settings.update(load_config_file(config_file))
        saved = settings.get("method")
        if request.resume and request.method and saved and request.method != saved:
            raise InputError(f"--resume: {request.out} is a {saved} run; leave out --method, or give --method {saved}")
    flags = {
        "method": request.method,
        "k": request.k,
        "seed": request.seed,
        "epochs": request.epochs,
        "batch_size": request.batch_size,
    }
    settings.update({key: value for key, value in flags.items() if value is not None})
    settings.update(parse_set_options(request.overrides))
    method = settings.pop("method", None)
    if not method:
        raise InputError("--method is required (see `clusterkit methods`)")
    k = parse_k(settings.pop("k", None))
    seed = check_seed(settings.pop("seed", 0))  # before any folder is made
    cls = get_method_class(str(method))
    for flag in ("epochs", "batch_size"):
        if flags[flag] is not None and flag not in cls.Config.__dataclass_fields__:  # --set: build_config says
            raise InputError(f"--{flag.replace('_', '-')} does not apply to {method}: it has no {flag} option")
    return Settings(str(method), k, seed, settings)


def ground_truth(samples: Samples, labels_file: Path | None, source: str | None = None) -> list[str] | None:
    """Labels from --labels joined to the samples by path (a folder source also by file, see
    `match_labels`), else the source's own labels (a built-in set's)."""
    if labels_file is None:
        return samples.labels
    root = Path(source) if source is not None and Path(source).is_dir() else None
    return match_labels(samples.paths, read_labels(labels_file), root=root, labels_dir=Path(labels_file).parent)


def cluster_sizes(clusters: np.ndarray, k: int) -> list[int]:
    return np.bincount(clusters, minlength=k).astype(int).tolist()


def collapse_warning(sizes: list[int]) -> str | None:
    """Collapse is deep clustering's most common failure: empty clusters or one giant cluster."""
    total = sum(sizes)
    empty = sum(1 for s in sizes if s == 0)
    if empty:
        return f"{empty} of {len(sizes)} clusters are empty (sizes {sizes})"
    fair = 1.0 / len(sizes)
    if total and max(sizes) > (fair + COLLAPSE_WAY * (1.0 - fair)) * total:
        return f"one cluster holds {max(sizes) / total:.0%} of the images (sizes {sizes})"
    return None


def _fit_metrics(model: ClusterMethod, samples: Samples, truth: list[str] | None, seconds: float) -> dict[str, Any]:
    sizes = cluster_sizes(model.labels_, int(model.k_))
    metrics: dict[str, Any] = {
        "method": model.name,
        "k": int(model.k_),
        "n_images": len(samples),
        "n_skipped": len(samples.skipped),
        "cluster_sizes": sizes,
        "seconds": round(seconds, 3),
        "device": getattr(model, "device_", "cpu"),
        "seed": model.seed,
    }
    if truth is not None:
        metrics.update(label_scores(truth, model.labels_))
    metrics.update(model.fit_info())
    return metrics


def run_fit(request: FitRequest) -> FitResult:
    settings = resolve_settings(request)
    model = create_method(settings.method, k=settings.k, seed=settings.seed, device=request.device, **settings.options)
    cfg = model.config
    images = load_images(
        request.source,
        image_size=cfg.image_size,
        channels=cfg.channels,
        max_image_size=cfg.max_image_size,
        nul_separated=request.nul_separated,
    )
    truth = ground_truth(images, request.labels, request.source)
    # Labels from --labels join the images too, so that training history scores each epoch with them.
    images = replace(images, labels=truth)
    model.check_k(len(images))
    primary = is_main_process()  # under torchrun only rank 0 writes files
    resolved = {"method": settings.method, "k": settings.k, "seed": settings.seed, **config_to_dict(cfg)}
    if request.out is None and primary:
        run = RunFolder.create_default(settings.method)
    else:
        run = RunFolder(request.out or default_run_dir(settings.method))
        if primary:
            run.prepare(resume=request.resume, force=request.force)
    shape = "x".join(map(str, images.sample_shape))
    start = time.perf_counter()
    try:
        if primary and not request.resume:
            run.write_config(resolved)
        console.info(f"fitting {settings.method} (k={settings.k}) on {len(images)} images of {shape}")
        model.fit(images, FitContext(run_dir=run.path if primary else None, resume=request.resume))
    except BaseException:
        if primary and not request.resume:
            run.discard_unsaved()
        raise
    seconds = time.perf_counter() - start
    if primary and request.resume:  # only once the checkpoint has accepted these settings
        run.write_config(resolved)
    proba = model.predict_proba(images)
    metrics = _fit_metrics(model, images, truth, seconds)
    warning = collapse_warning(metrics["cluster_sizes"])
    if warning:
        console.warn(f"possible collapse: {warning}")
    if primary:
        model.save(run.checkpoint)
        run.write_outputs(images.paths, proba, model.labels_, metrics)
    return FitResult(run_dir=run.path, model=model, metrics=metrics)
