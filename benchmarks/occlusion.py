"""Robustness to occlusion: ACC on a built-in set and on its copy with a black square over a quarter of each image.

    python benchmarks/occlusion.py --methods sanet,sanet-robust,sanet-either,kmeans,spectral --seeds 0,1,2
    python benchmarks/occlusion.py --dataset photo-crops --k 2 --methods sanet,sanet-local,sanet-robust,kmeans,spectral
    python benchmarks/occlusion.py --image-size 32 --methods sanet,sanet-local,kmeans,spectral
    python benchmarks/occlusion.py --folder data/fashion/images --labels data/fashion/labels.csv

Both data sets and all methods run side by side in one process (methods through the registry, default
options, plus the named variants below). Prints, per method, the mean over seeds on each set and the drop in ACC, and writes every run
as JSON.
"""

from __future__ import annotations

import argparse

from _common import (
    add_folder_arguments,
    folder_name,
    load_folder,
    machine_info,
    mean_sd,
    print_table,
    timed_fit,
    write_json,
)

# Named option sets, so that one run puts them beside the defaults.
VARIANTS = {
    # SA-Net's block comparison made as robust as it gets: each block described from its own pixels,
    # blocks judged erased by the image's neighbours left out, every training image a candidate
    # (exhaustive: N^2 re-ranking).
    "sanet-robust": ("sanet", {"local_blocks": True, "blank_blocks": "inferred", "candidates": 10**9}),
    # The same with every block blank in either image left out (the robust setting before "inferred").
    "sanet-either": ("sanet", {"local_blocks": True, "blank_blocks": "either", "candidates": 10**9}),
    # Only the blocks described from their own pixels: on images whose blocks are larger than the filters.
    "sanet-local": ("sanet", {"local_blocks": True}),
}


def summarize(runs: list[dict], method: str, dataset: str, key: str) -> tuple[float, float]:
    return mean_sd([r[key] for r in runs if r["method"] == method and r["dataset"] == dataset])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sanet,kmeans,spectral")
    parser.add_argument(
        "--dataset",
        default=None,
        help="built-in set (default: digits); occluded by the same rule as builtin:digits-occluded",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--image-size", type=int, default=None, help="resample the set to this side first (bilinear), then occlude"
    )
    add_folder_arguments(parser)
    parser.add_argument("--out", default=None, help="default: benchmarks/out/occlusion[-DATASET].json")
    args = parser.parse_args()
    if args.folder and args.dataset:
        parser.error("--folder replaces --dataset: give one of them")
    args.dataset = args.dataset or "digits"
    folder = load_folder(args, parser, image_size=args.image_size)

    from clusterkit import load_images
    from clusterkit.data.builtin import occlude
    from clusterkit.data.samples import ImageSet

    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    clean = folder if folder is not None else load_images(f"builtin:{args.dataset}", image_size=args.image_size)
    set_name = folder_name(args.folder) if args.folder else args.dataset
    occluded = ImageSet(paths=clean.paths, pixels=occlude(clean.pixels), labels=clean.labels)
    runs = []
    for dataset, images in (("clean", clean), ("occluded", occluded)):
        for method in methods:
            for seed in seeds:
                name, options = VARIANTS.get(method, (method, {}))
                result = {"dataset": dataset, **timed_fit(name, images, args.k, seed, **options), "method": method}
                runs.append(result)
                print(
                    f"{set_name} {dataset} {method} seed {seed}: acc {result['acc']:.3f} ({result['seconds']} s)",
                    flush=True,
                )
    table = []
    for method in methods:
        row = {"method": method}
        for key in ("acc", "nmi", "ari"):
            on_clean, clean_sd = summarize(runs, method, "clean", key)
            on_occluded, occluded_sd = summarize(runs, method, "occluded", key)
            row.update(
                {f"{key}_clean": on_clean, f"{key}_occluded": on_occluded, f"{key}_drop": on_clean - on_occluded}
            )
            if key == "acc":
                row.update({"acc_clean_sd": clean_sd, "acc_occluded_sd": occluded_sd})
        table.append(row)
    print()
    print_table(table, ["method", "acc_clean", "acc_occluded", "acc_drop", "nmi_clean", "nmi_occluded", "nmi_drop"])
    suffix = ("" if set_name == "digits" else f"-{set_name}") + (f"-{args.image_size}px" if args.image_size else "")
    out = args.out or f"benchmarks/out/occlusion{suffix}.json"
    write_json(
        out,
        {
            "machine": machine_info(),
            "dataset": args.folder or args.dataset,
            "image_size": args.image_size,
            "k": args.k,
            "seeds": seeds,
            "summary": table,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
