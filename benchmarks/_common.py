"""Helpers shared by the benchmark scripts: timing a fit, peak memory, printing and saving tables."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far. Linux's VmHWM where there is one: ru_maxrss keeps
    the peak of the parent up to the fork, so a fresh child process would report its parent's."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux and BSD: KiB


def add_folder_arguments(parser) -> None:
    """--folder / --labels: benchmark an image folder with its ground truth instead of a built-in set."""
    parser.add_argument(
        "--folder", default=None, help="an image folder to run instead of the built-in set(s) (needs --labels)"
    )
    parser.add_argument(
        "--labels", default=None, help="the folder's ground truth: CSV with path,label, as `clusterkit evaluate`"
    )


def folder_name(folder: str) -> str:
    """What tables call a folder: its name, or its parent's for the `NAME/images` that exports write."""
    path = Path(folder).resolve()
    return path.parent.name if path.name == "images" else path.name


def load_folder(args, parser, image_size: int | None = None):
    """The images of --folder with the labels of --labels (None when no folder was named)."""
    if (args.folder is None) != (args.labels is None):
        parser.error("--folder and --labels go together")
    if args.folder is None:
        return None
    from clusterkit import load_images
    from clusterkit.workflows.fit import ground_truth

    images = load_images(args.folder, image_size=image_size)
    return replace(images, labels=ground_truth(images, args.labels))


def timed_fit(method: str, images, k: int, seed: int, **options: Any) -> dict[str, Any]:
    """Fit one method, predict the training images, score against their labels."""
    from clusterkit import get_method
    from clusterkit.metrics import evaluate

    model = get_method(method, k=k, seed=seed, **options)
    start = time.perf_counter()
    model.fit(images)
    predicted = model.labels_
    seconds = time.perf_counter() - start
    scores = evaluate(images.labels, predicted)
    epochs = getattr(model.config, "epochs", None)
    return {
        "method": method,
        "seed": seed,
        "seconds": round(seconds, 2),
        "device": getattr(model, "device_", "cpu"),
        "epochs": epochs,
        "clusters": len(set(predicted.tolist())),
        **{key: round(scores[key], 4) for key in ("acc", "nmi", "ari")},
    }


def isolated_fit(method: str, images, k: int, seed: int, **options: Any) -> dict[str, Any]:
    """`timed_fit` in a fresh process, so that its peak memory is this fit's alone (a process's
    peak resident size only grows) and no fit inherits another's caches or thread pools."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measured_fit, method, images, k, seed, options).result()


def _measured_fit(method: str, images, k: int, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    import torch

    result = timed_fit(method, images, k, seed, **options)
    result["peak_mb"] = round(peak_rss_mb(), 1)
    if torch.cuda.is_available():
        result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for a single seed)."""
    import statistics

    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-|-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare timings: cores, platform, versions and the load while measuring."""
    import platform

    import torch

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
    }


def write_json(path: str | Path, payload: Any) -> None:
    from clusterkit.io import atomic_write_json

    atomic_write_json(path, payload)
    print(f"wrote {path}", file=sys.stderr)
