"""Peak memory of `clusterkit assign` with a k-means model as the number of images grows.

    python benchmarks/idx_to_folder.py /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
        /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz data/fashion500 --n 500
    python benchmarks/idx_to_folder.py ... data/fashion5k --n 5000
    python benchmarks/assign_memory.py data/fashion500/images data/fashion5k/images --k 20

Fits k-means once on the first folder (the model `assign` loads), then runs `clusterkit assign` on
each folder in a fresh process, `--repeats` times, and reports its peak resident memory (ru_maxrss)
beside `import torch` plus decoding the same files, the floor any assign pays. With the scoring done
in bounded chunks (QA D1), assign's memory grows with N only by the images and their N x k
probabilities, not by N x k x D. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_info, print_table, write_json
from assign_speed import PROBES, probe

MEMORY_PROBES = {name: PROBES[name] for name in ("import torch + decode", "clusterkit assign")}


def fit_kmeans(folder: str, run_dir: str, k: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "clusterkit.cli", "fit", folder, "--method", "kmeans", "--k", str(k)]
        + ["--out", run_dir, "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def count_images(folder: str) -> int:
    return sum(1 for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() == ".png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="image folders of growing size (the first one is fitted)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/assign_memory.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = str(Path(tmp) / "kmeans")
        fit_kmeans(args.folders[0], run_dir, args.k)
        for folder in args.folders:
            peaks = {name: [] for name in MEMORY_PROBES}
            for _ in range(args.repeats):
                for name, code in MEMORY_PROBES.items():
                    peaks[name].append(probe(code, folder, run_dir)["peak_mb"])
            floor, assign = max(peaks["import torch + decode"]), max(peaks["clusterkit assign"])
            rows.append(
                {
                    "folder": folder,
                    "images": count_images(folder),
                    "k": args.k,
                    "torch_and_decode_mb": floor,
                    "assign_peak_mb": assign,
                    "assign_over_floor_mb": round(assign - floor, 1),
                }
            )
    for row in rows[1:]:
        row["growth_vs_first_mb"] = round(row["assign_peak_mb"] - rows[0]["assign_peak_mb"], 1)
    columns = ["images", "k", "torch_and_decode_mb", "assign_peak_mb", "assign_over_floor_mb", "growth_vs_first_mb"]
    print_table(rows, columns)
    write_json(args.out, {"machine": machine_info(), "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
