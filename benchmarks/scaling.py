"""SA-Net fit time and peak memory as the number of images grows (digits augmented to 5k, 20k, 50k).

    python benchmarks/scaling.py --sizes 5000,20000,50000
    python benchmarks/scaling.py --sizes 2000,5000,10000 --set local_blocks=true --set blank_blocks=either --set candidates=1000000000 --out benchmarks/out/scaling_robust.json

Each size runs in a fresh process (`--one N`), so that its peak resident memory (getrusage maxrss) is
its own; the process's memory after loading the data, torch, scipy and scikit-learn, before the fit, is reported as well,
so that the fit's own growth can be read apart from the fixed cost of the interpreter and libraries.
Wall time and process CPU time (all threads) are both reported: on a machine shared with other jobs
wall time varies severalfold between runs, CPU time much less.
The data: scikit-learn's 1,797 digits, then new images, each a blend of two digits of the same class
(weights w, 1 - w, w uniform in [0.25, 0.75]) with seeded pixel noise (uniform, up to +-24 of 255),
labels kept. Not noisy copies of single digits: at 50k that is ~27 copies per original, more than
n_neighbors, so every image's neighbours are copies of its own original and the kNN graph falls apart
into one connected component per original (1,796 components at 50k on raw pixels, 523 at 20k). That
measures the data's near-duplicate structure, not scaling: the spectral embedding then solves one
eigenproblem per component and its first k eigenvectors only mark copy groups (ACC 0.10 in an earlier
run). Blends of two random parents are distinct samples of the class. Not shifts either: SA-Net
compares blocks at the same place, and one-pixel shifts of 8 px images split classes by shift.
The fit's graph_components is reported: more than k components would again mean broken data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import machine_info, peak_rss_mb, print_table, write_json

NOISE = 24  # intensity levels of 255


def augmented_digits(n: int, seed: int = 0):
    """`n` digits: the 1,797 originals first, then noisy blends of two random originals of one class."""
    import numpy as np

    from clusterkit.data.builtin import load_builtin
    from clusterkit.data.samples import ImageSet

    base = load_builtin("digits")
    rng = np.random.default_rng(seed)
    extra = max(0, n - len(base))
    targets = np.asarray(base.labels)
    first = rng.integers(0, len(base), extra)
    second = np.empty(extra, dtype=np.int64)
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        chosen = targets[first] == label
        second[chosen] = rng.choice(members, chosen.sum())
    weight = rng.uniform(0.25, 0.75, size=(extra, 1, 1, 1))
    blends = weight * base.pixels[first] + (1 - weight) * base.pixels[second]
    blends += rng.integers(-NOISE, NOISE + 1, size=blends.shape)
    pixels = np.concatenate([base.pixels, np.clip(np.rint(blends), 0, 255).astype(np.uint8)])[:n]
    labels = (list(base.labels) + [base.labels[s] for s in first])[:n]
    return ImageSet(paths=[f"images/{i:06d}.png" for i in range(n)], pixels=pixels, labels=labels)


def run_one(n: int, seed: int, options: dict) -> dict:
    import scipy.sparse.linalg  # noqa: F401  (imported before the baseline: libraries are a fixed cost)
    import sklearn.cluster  # noqa: F401
    import torch  # noqa: F401

    from clusterkit import get_method
    from clusterkit.metrics import evaluate

    images = augmented_digits(n, seed)
    before = peak_rss_mb()
    model = get_method("sanet", k=10, seed=seed, device="cpu", **options)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(images)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    scores = evaluate(images.labels, model.labels_)
    return {
        "n": n,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "peak_mb": round(peak_rss_mb(), 1),
        "base_mb": round(before, 1),
        "graph_nnz": model.graph_nnz_,
        "graph_components": model.fit_info()["graph_components"],
        "acc": round(scores["acc"], 4),
        "nmi": round(scores["nmi"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a SA-Net option, as fit's --set"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/out/scaling.json")
    args = parser.parse_args()
    if args.one:
        from clusterkit.config import parse_set_options

        print(json.dumps(run_one(args.one, args.seed, parse_set_options(args.set))))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        sets = [arg for pair in args.set for arg in ("--set", pair)]
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--seed", str(args.seed), *sets],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["fit_mb"] = round(row["peak_mb"] - row["base_mb"], 1)
        rows.append(row)
        print(
            f"n={n}: {row['seconds']} s ({row['cpu_seconds']} s CPU), peak {row['peak_mb']} MB (fit {row['fit_mb']} MB)",
            flush=True,
        )
    first = rows[0]
    for row in rows:
        row["time_ratio"] = row["seconds"] / first["seconds"]
        row["cpu_ratio"] = row["cpu_seconds"] / first["cpu_seconds"]
        row["fit_mb_ratio"] = row["fit_mb"] / max(first["fit_mb"], 1e-9)
        row["n_ratio"] = row["n"] / first["n"]
    print()
    print_table(
        rows,
        [
            "n",
            "n_ratio",
            "seconds",
            "time_ratio",
            "cpu_seconds",
            "cpu_ratio",
            "peak_mb",
            "fit_mb",
            "fit_mb_ratio",
            "graph_nnz",
            "graph_components",
            "acc",
        ],
    )
    write_json(args.out, {"machine": machine_info(), "options": args.set, "rows": rows})


if __name__ == "__main__":
    main()
