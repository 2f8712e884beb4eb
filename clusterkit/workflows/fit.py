"""`fit` as a library verb: resolve settings, load samples, train, write the run folder.

The CLI's `fit` is this function plus printing; Python users call `run_fit` directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clusterkit import console
from clusterkit.config import config_to_dict, load_config_file, parse_set_options, with_preset
from clusterkit.data import load_images
from clusterkit.data.labels import match_labels, read_labels
from clusterkit.data.loading import MAX_DEPTH, load_source
from clusterkit.data.samples import Samples
from clusterkit.data.sources import source_root
from clusterkit.engine import is_main_process
from clusterkit.engine.context import FitContext
from clusterkit.errors import InputError
from clusterkit.methods.base import ClusterMethod, check_seed
from clusterkit.methods.factory import create_method
from clusterkit.methods.registry import get_method_class
from clusterkit.metrics import cluster_sizes, collapse_warning, label_scores
from clusterkit.outputs.assignments import sample_columns
from clusterkit.outputs.run import CONFIG_NAME, RunFolder, default_run_dir


@dataclass
class FitRequest:
    source: str
    method: str | None = None
    k: str | int | None = None
    out: Path | None = None
    config_file: Path | None = None
    overrides: list[str] = field(default_factory=list)
    preset: str | None = None  # a named set of the method's options, under --config, the flags and --set
    device: str = "auto"
    seed: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    labels: Path | None = None
    resume: bool = False
    force: bool = False
    nul_separated: bool = False
    backbone: str | None = None  # cluster this backbone's features (clusterkit.features), not pixels
    weights: str | None = None
    cache: Path | None = None  # the feature cache folder (None: the user cache folder)
    use_cache: bool = True


@dataclass(frozen=True)
class Settings:
    """A fit's resolved settings: the method, k, seed, the method's own options (its preset's, if any,
    under the rest), and the backbone whose features it clusters (None: pixels)."""

    method: str
    k: int | str
    seed: int
    options: dict[str, Any]
    backbone: str | None = None
    weights: str | None = None
    preset: str | None = None


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
    """Method, k, seed and method options, from (lowest first) the method's defaults, the preset, the
    config file, the flags, --set. A preset may be named by `--preset`, or as `preset:` in the config
    file or `--set preset=NAME` (a run's config.yaml records it)."""
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
        if request.resume and request.preset is not None and request.preset != settings.get("preset"):
            # its config.yaml holds every option, so the preset would change nothing but the record
            saved_preset = settings.get("preset")
            kept = f"preset {saved_preset}" if saved_preset is not None else "no preset"
            raise InputError(f"--resume: {request.out} was fit with {kept}; leave out --preset")
    flags = {
        "method": request.method,
        "k": request.k,
        "seed": request.seed,
        "epochs": request.epochs,
        "batch_size": request.batch_size,
        "backbone": request.backbone,
        "weights": request.weights,
        "preset": request.preset,
    }
    settings.update({key: value for key, value in flags.items() if value is not None})
    settings.update(parse_set_options(request.overrides))
    method = settings.pop("method", None)
    if not method:
        raise InputError("--method is required (see `clusterkit methods`)")
    k = parse_k(settings.pop("k", None))
    seed = check_seed(settings.pop("seed", 0))  # before any folder is made
    backbone, weights = settings.pop("backbone", None), settings.pop("weights", None)
    preset = settings.pop("preset", None)
    cls = get_method_class(str(method))
    settings, overridden = with_preset(cls.Config, preset, settings, str(method))
    if overridden:
        given = ", ".join(f"{key}={settings[key]!r}" for key in overridden)
        console.info(f"preset {preset}: {given} given by --config, the flags or --set instead")
    if backbone is not None:
        check_takes_features(cls)
    elif weights is not None:
        raise InputError("--weights goes with --backbone: the weights of the backbone that makes the features")
    if weights is not None and Path(str(weights)).expanduser().is_file():  # config.yaml repeats it from anywhere
        weights = str(Path(str(weights)).expanduser().resolve())
    for flag in ("epochs", "batch_size"):
        if flags[flag] is not None and flag not in cls.Config.__dataclass_fields__:  # --set: build_config says
            raise InputError(f"--{flag.replace('_', '-')} does not apply to {method}: it has no {flag} option")
    return Settings(str(method), k, seed, settings, backbone, weights, preset)


def check_takes_features(cls: type[ClusterMethod]) -> None:
    """Refuse --backbone, before any work, for a method that learns its own features from pixels."""
    if "features" in cls.input_kinds:
        return
    from clusterkit.methods.registry import available_methods

    takers = [name for name, method in available_methods().items() if "features" in method.input_kinds]
    raise InputError(
        f"--backbone: {cls.name} learns its own features from pixels and takes no backbone's; "
        f"the methods that cluster a backbone's features are {', '.join(takers)}"
    )


def load_samples(request: FitRequest, settings: Settings, config: Any) -> Samples:
    """The source as the fit takes it: pixels as the method's options size them (volumes too, for a
    method that reads them), or the features of `settings.backbone` (its own preprocessing sizes the
    images)."""
    if settings.backbone is None and "volumes" in get_method_class(settings.method).input_kinds:
        return load_source(
            request.source,
            image_size=config.image_size,
            channels=config.channels,
            max_image_size=config.max_image_size,
            max_depth=getattr(config, "max_depth", MAX_DEPTH),
            nul_separated=request.nul_separated,
        )
    if settings.backbone is None:
        return load_images(
            request.source,
            image_size=config.image_size,
            channels=config.channels,
            max_image_size=config.max_image_size,
            nul_separated=request.nul_separated,
        )
    from clusterkit.workflows.embed import EmbedRequest, embed_source

    return embed_source(
        EmbedRequest(
            request.source,
            settings.backbone,
            weights=settings.weights,
            cache=request.cache,
            use_cache=request.use_cache,
            device=request.device,
            nul_separated=request.nul_separated,
        )
    )


def ground_truth(samples: Samples, labels_file: Path | None, source: str | None = None) -> list[str] | None:
    """Labels from --labels joined to the samples by path (a folder source also by file, see
    `match_labels`), else the source's own labels (a built-in set's)."""
    if labels_file is None:
        return samples.labels
    root = Path(source) if source is not None and Path(source).is_dir() else None
    return match_labels(samples.paths, read_labels(labels_file), root=root, labels_dir=Path(labels_file).parent)


def check_unique_paths(paths: list[str]) -> None:
    """A list naming one file twice would write it twice into assignments.csv, which every table
    reader (evaluate, report, export) refuses: refuse it here, before the fit."""
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise InputError(f"the source names {path!r} twice; list each image once")
        seen.add(path)


def source_facts(source: str, labels_file: Path | None) -> dict[str, str | None]:
    """Where the run's images and ground truth came from, for the commands that read the run later."""
    root = source_root(source)
    return {
        "source": source,
        "source_root": None if root is None else str(root),
        "labels_file": None if labels_file is None else str(Path(labels_file).resolve()),
    }


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
    if model.backbone_ is not None:
        metrics["backbone"] = model.backbone_["name"]
    if truth is not None:
        metrics.update(label_scores(truth, model.labels_))
    metrics.update(model.fit_info())
    return metrics


def run_fit(request: FitRequest) -> FitResult:
    settings = resolve_settings(request)
    model = create_method(settings.method, k=settings.k, seed=settings.seed, device=request.device, **settings.options)
    cfg = model.config
    images = load_samples(request, settings, cfg)
    check_unique_paths(images.paths)
    truth = ground_truth(images, request.labels, request.source)
    # Labels from --labels join the images too, so that training history scores each epoch with them.
    images = replace(images, labels=truth)
    model.check_k(len(images))
    primary = is_main_process()  # under torchrun only rank 0 writes files
    resolved: dict[str, Any] = {"method": settings.method, "k": settings.k, "seed": settings.seed}
    if settings.preset is not None:  # recorded with every option it set, so config.yaml repeats the run alone
        resolved["preset"] = settings.preset
    resolved.update(config_to_dict(cfg))
    resolved.update({key: getattr(settings, key) for key in ("backbone", "weights") if getattr(settings, key)})
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
        noun = "files" if images.kind == "volumes" else "images"
        console.info(f"fitting {settings.method} (k={settings.k}) on {len(images)} {noun} ({images.kind} {shape})")
        model.fit(images, FitContext(run_dir=run.path if primary else None, resume=request.resume))
    except BaseException:
        if primary and not request.resume:
            run.discard_unsaved()
        raise
    seconds = time.perf_counter() - start
    if primary and request.resume:  # only once the checkpoint has accepted these settings
        run.write_config(resolved)
    proba = model.predict_proba(images)
    metrics = _fit_metrics(model, images, truth, seconds) | source_facts(request.source, request.labels)
    warning = collapse_warning(metrics["cluster_sizes"])
    if warning:
        console.warn(f"possible collapse: {warning}")
    if primary:
        model.save(run.checkpoint)
        run.write_outputs(images.paths, proba, model.labels_, metrics, columns=sample_columns(images))
    return FitResult(run_dir=run.path, model=model, metrics=metrics)
