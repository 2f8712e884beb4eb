"""Robustness to occlusion: ACC on digits and on digits with a black square over a quarter of each image.

    python benchmarks/occlusion.py --methods sanet,sanet-robust,kmeans,spectral --seeds 0,1,2

Both data sets and all methods run side by side in one process (methods through the registry, default
options, plus the named variants below). Prints, per method, the mean over seeds on each set and the drop in ACC, and writes every run
as JSON.
"""

from __future__ import annotations

import argparse

from _common import machine_info, mean_sd, print_table, timed_fit, write_json

DATASETS = ("digits", "digits-occluded")
# Named option sets, so that one run puts them beside the defaults.
VARIANTS = {
    # SA-Net's block comparison made as robust as it gets: each block described from its own pixels,
    # blank-in-either blocks left out, every training image a candidate (exhaustive: N^2 re-ranking).
    "sanet-robust": ("sanet", {"local_blocks": True, "blank_blocks": "either", "candidates": 10**9}),
}


def summarize(runs: list[dict], method: str, dataset: str, key: str) -> tuple[float, float]:
    return mean_sd([r[key] for r in runs if r["method"] == method and r["dataset"] == dataset])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sanet,kmeans,spectral")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/out/occlusion.json")
    args = parser.parse_args()

    from clusterkit import load_images

    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for dataset in DATASETS:
        images = load_images(f"builtin:{dataset}")
        for method in methods:
            for seed in seeds:
                name, options = VARIANTS.get(method, (method, {}))
                result = {"dataset": dataset, **timed_fit(name, images, args.k, seed, **options), "method": method}
                runs.append(result)
                print(f"{dataset} {method} seed {seed}: acc {result['acc']:.3f} ({result['seconds']} s)", flush=True)
    table = []
    for method in methods:
        row = {"method": method}
        for key in ("acc", "nmi", "ari"):
            clean, clean_sd = summarize(runs, method, "digits", key)
            occluded, occluded_sd = summarize(runs, method, "digits-occluded", key)
            row.update({f"{key}_clean": clean, f"{key}_occluded": occluded, f"{key}_drop": clean - occluded})
            if key == "acc":
                row.update({"acc_clean_sd": clean_sd, "acc_occluded_sd": occluded_sd})
        table.append(row)
    print()
    print_table(table, ["method", "acc_clean", "acc_occluded", "acc_drop", "nmi_clean", "nmi_occluded", "nmi_drop"])
    write_json(args.out, {"machine": machine_info(), "seeds": seeds, "summary": table, "runs": runs})


if __name__ == "__main__":
    main()
