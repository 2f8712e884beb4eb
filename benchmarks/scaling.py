"""SA-Net fit time and peak memory as the number of images grows (digits augmented to 5k, 20k, 50k).

    python benchmarks/scaling.py --sizes 5000,20000,50000

Each size runs in a fresh process (`--one N`), so that its peak resident memory (getrusage maxrss) is
its own; the process's memory after loading the data, torch, scipy and scikit-learn, before the fit, is reported as well,
so that the fit's own growth can be read apart from the fixed cost of the interpreter and libraries.
The data: scikit-learn's digits, then copies with seeded pixel noise (uniform, up to +-24 of 255), labels
kept. Noise rather than shifts: SA-Net compares blocks at the same place, and one-pixel shifts of 8 px
images split classes by shift, which would measure that weakness instead of scaling; exact copies are
avoided because duplicates collapse a self-tuning bandwidth to zero.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _common import peak_rss_mb, print_table, write_json


NOISE = 24  # intensity levels of 255


def augmented_digits(n: int, seed: int = 0):
    """`n` digits: the 1,797 originals first, then noisy copies of randomly drawn originals."""
    import numpy as np

    from clusterkit.data.builtin import load_builtin
    from clusterkit.data.images import ImageSet

    base = load_builtin("digits")
    rng = np.random.default_rng(seed)
    source = np.concatenate([np.arange(len(base)), rng.integers(0, len(base), max(0, n - len(base)))])[:n]
    noise = rng.integers(-NOISE, NOISE + 1, size=(n, *base.pixels.shape[1:]))
    noise[: len(base)] = 0
    pixels = np.clip(base.pixels[source].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    labels = [base.labels[s] for s in source]
    return ImageSet(paths=[f"images/{i:06d}.png" for i in range(n)], pixels=pixels, labels=labels)


def run_one(n: int, seed: int) -> dict:
    import scipy.sparse.linalg  # noqa: F401  (imported before the baseline: libraries are a fixed cost)
    import sklearn.cluster  # noqa: F401
    import torch  # noqa: F401

    from clusterkit import get_method
    from clusterkit.metrics import evaluate

    images = augmented_digits(n, seed)
    before = peak_rss_mb()
    model = get_method("sanet", k=10, seed=seed, device="cpu")
    start = time.perf_counter()
    model.fit(images)
    seconds = time.perf_counter() - start
    scores = evaluate(images.labels, model.training_labels_)
    return {"n": n, "seconds": round(seconds, 2), "peak_mb": round(peak_rss_mb(), 1), "base_mb": round(before, 1),
            "graph_nnz": model.graph_nnz_, "acc": round(scores["acc"], 4), "nmi": round(scores["nmi"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/out/scaling.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.seed)))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)],
                              check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["fit_mb"] = round(row["peak_mb"] - row["base_mb"], 1)
        rows.append(row)
        print(f"n={n}: {row['seconds']} s, peak {row['peak_mb']} MB (fit {row['fit_mb']} MB)", flush=True)
    first = rows[0]
    for row in rows:
        row["time_ratio"] = row["seconds"] / first["seconds"]
        row["fit_mb_ratio"] = row["fit_mb"] / max(first["fit_mb"], 1e-9)
        row["n_ratio"] = row["n"] / first["n"]
    print()
    print_table(rows, ["n", "n_ratio", "seconds", "time_ratio", "peak_mb", "fit_mb", "fit_mb_ratio", "graph_nnz", "acc"])
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average": os.getloadavg()}
    write_json(args.out, {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
