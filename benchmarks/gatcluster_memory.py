"""Peak memory of GATCluster training on larger RGB images, for several big-batch sizes B.

    python benchmarks/gatcluster_memory.py --size 96 --big-batch 64,256 --width 16

The two-step schedule keeps only one sub-batch (`--batch-size` images) with activations for
backward; B only adds its (B, k) targets and labels. So peak memory should stay flat as B grows.
The data: scikit-learn's digits exported as RGB PNGs upscaled 12x (96 px), loaded back at `--size`
px, the first `--n` images. Each B runs in a fresh process (`--one`), so that its peak resident
memory (getrusage maxrss) is its own; the peak after loading the images, torch and scikit-learn,
before the fit, is reported as well (`base_mb`), so the fit's own growth (`fit_mb`) can be read
apart from that fixed cost. On CUDA the peak allocated device memory is reported too. Each fit
runs `--epochs` outer iterations of `--repeats` passes: enough to reach the memory peak, not to
cluster well. The row's `probs_*` columns check that `predict_proba` gives one label distribution
per image (rows summing to one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info, peak_rss_mb, print_table, write_json


def run_one(spec: dict) -> dict:
    import numpy as np
    import sklearn.cluster  # noqa: F401  (imported before the baseline: libraries are a fixed cost)
    import torch

    from clusterkit import get_method
    from clusterkit.data.loading import load_images

    images = load_images(str(Path(spec["folder"]) / "images"), image_size=spec["size"])
    images = images.subset(np.arange(min(len(images), spec["n"])))
    before = peak_rss_mb()
    options = {key: spec[key] for key in ("big_batch", "batch_size", "width", "repeats", "epochs")}
    model = get_method("gatcluster", k=10, seed=spec["seed"], device=spec["device"], **options)
    start = time.perf_counter()
    model.fit(images)
    seconds = time.perf_counter() - start
    probs = model.predict_proba(images)
    cuda = torch.cuda.is_available() and str(model.device) != "cpu"
    return {
        "image": "x".join(str(s) for s in images.pixels.shape[1:]),
        "n": len(images),
        **options,
        "seconds": round(seconds, 1),
        "peak_mb": round(peak_rss_mb(), 1),
        "base_mb": round(before, 1),
        "cuda_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "probs_shape": "x".join(str(s) for s in probs.shape),
        "probs_row_sum": round(float(probs.sum(axis=1).mean()), 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--big-batch", default="64,256", help="comma-separated B values")
    parser.add_argument("--n", type=int, default=512, help="images used (the first n of the export)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--folder", type=Path, help="an export of the digits (made in a temp folder if absent)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/out/gatcluster_memory.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            from clusterkit.data.builtin_export import export_builtin

            folder = Path(tmp)
            export_builtin("digits", folder, scale=12, rgb=True)
        rows = []
        for big_batch in (int(b) for b in args.big_batch.split(",")):
            spec = {
                "folder": str(folder),
                "size": args.size,
                "n": args.n,
                "big_batch": big_batch,
                "batch_size": args.batch_size,
                "width": args.width,
                "repeats": args.repeats,
                "epochs": args.epochs,
                "seed": args.seed,
                "device": args.device,
            }
            done = subprocess.run(
                [sys.executable, __file__, "--one", json.dumps(spec)], check=True, capture_output=True, text=True
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["fit_mb"] = round(row["peak_mb"] - row["base_mb"], 1)
            rows.append(row)
            print(f"B={big_batch}: {row['seconds']} s, peak {row['peak_mb']} MB (fit {row['fit_mb']} MB)", flush=True)
    print()
    print_table(
        rows,
        [
            "image",
            "n",
            "big_batch",
            "batch_size",
            "width",
            "seconds",
            "peak_mb",
            "base_mb",
            "fit_mb",
            "cuda_peak_mb",
            "probs_shape",
            "probs_row_sum",
        ],
    )
    write_json(args.out, {"machine": machine_info(), "rows": rows})


if __name__ == "__main__":
    main()
