"""ACC / NMI / ARI, fit time and peak memory of every method on a data set, side by side, in one run.

    python benchmarks/quality.py                      # every registered method, digits, seeds 0,1,2
    python benchmarks/quality.py --folder data/fashion/images --labels data/fashion/labels.csv --methods kmeans,sanet
    python benchmarks/quality.py --backbone efficientnet_lite0   # + the classical methods on its features
    python benchmarks/quality.py --methods kmeans,gedi,gedi:weight_generative=0   # a variant: METHOD:KEY=VALUE[+KEY=VALUE]

Prints one row per method and data set (mean and spread over seeds; each fit in its own process,
so that `peak_mb` is that fit's own) and writes all runs as JSON. Each row of a method that is not
a classical baseline says whether its mean ACC beats the best baseline's on that data set.
"""

from __future__ import annotations

import argparse

from _common import (
    add_folder_arguments,
    folder_name,
    isolated_fit,
    load_folder,
    machine_info,
    mean_sd,
    print_table,
    write_json,
)

OWN_SAMPLES = ("pixels", "volumes")  # the data set's own samples, not a backbone's features of them


def parse_variant(spec: str) -> tuple[str, dict]:
    """'gedi:weight_generative=0+hidden=128' -> ('gedi', {...}): a method with options (an ablation),
    its values read as YAML scalars as `fit --set` reads them."""
    import yaml

    method, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split("+")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {spec}: options are KEY=VALUE joined by +")
        options[key] = yaml.safe_load(value)
    return method, options


def is_baseline(spec: str) -> bool:
    """The classical baselines are the methods of `methods/classical.py`."""
    from clusterkit.methods.registry import METHOD_MODULES

    return METHOD_MODULES[parse_variant(spec)[0]].endswith(".classical")


def mark_baseline_comparison(summary: list[dict]) -> None:
    """`beats_baselines` on every other row on the set's own samples (pixels, volumes): its mean ACC
    against the best baseline's on the same data set."""
    for dataset in {row["dataset"] for row in summary}:
        rows = [row for row in summary if row["dataset"] == dataset]
        baselines = [row for row in rows if is_baseline(row["method"]) and row["input"] in OWN_SAMPLES]
        if not baselines:
            continue
        best = max(baselines, key=lambda row: row["acc"])
        for row in rows:
            if not is_baseline(row["method"]) and row["input"] in OWN_SAMPLES:
                verdict = "yes" if row["acc"] > best["acc"] else "no"
                row["beats_baselines"] = f"{verdict} ({row['acc'] - best['acc']:+.3f} vs {best['method']})"


def embedded(source: str, backbone: str, images, device: str):
    """The backbone's features of `source` (through the feature cache) with the images' labels, and
    the seconds the embedding took."""
    import time
    from dataclasses import replace

    from clusterkit.workflows.embed import EmbedRequest, embed_source

    start = time.perf_counter()
    features = embed_source(EmbedRequest(source, backbone, device=device))
    if features.paths != images.paths:
        raise SystemExit(f"{source}: the backbone read other files than the pixels ({len(features)} vs {len(images)})")
    return replace(features, labels=images.labels), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="", help="comma-separated; default: every registered method")
    parser.add_argument("--datasets", default=None, help="comma-separated built-in data sets (default: digits)")
    add_folder_arguments(parser)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument(
        "--backbone", default=None, help="also fit the methods that take features on this backbone's (clusterkit embed)"
    )
    parser.add_argument("--out", default=None, help="default: benchmarks/out/quality[-FOLDER].json")
    args = parser.parse_args()
    if args.folder and args.datasets:
        parser.error("--folder replaces --datasets: give one of them")
    folder = load_folder(args, parser)

    from clusterkit.data.loading import load_source
    from clusterkit.methods.registry import available_methods

    methods = [m for m in args.methods.split(",") if m] or list(available_methods())
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, summary = [], []
    sets = (
        [(folder_name(args.folder), folder)]
        if folder is not None
        else [(name, None) for name in (args.datasets or "digits").split(",")]
    )
    for dataset, images in sets:
        images = images if images is not None else load_source(f"builtin:{dataset}")  # a volume set too
        inputs = [(images.kind, images, methods)]
        if args.backbone:
            source = args.folder or f"builtin:{dataset}"
            features, seconds = embedded(source, args.backbone, images, args.device)
            print(f"{dataset}: {args.backbone} features of {len(features)} images in {seconds:.1f} s", flush=True)
            takers = [m for m in methods if "features" in available_methods()[parse_variant(m)[0]].input_kinds]
            inputs.append((args.backbone, features, takers))
        for name, samples, fitted in inputs:
            for method in fitted:
                base, options = parse_variant(method)
                results = [isolated_fit(base, samples, args.k, seed, device=args.device, **options) for seed in seeds]
                for result in results:
                    result.update(dataset=dataset, input=name, method=method)
                runs.extend(results)
                row = {"dataset": dataset, "method": method, "input": name, "device": results[0]["device"]}
                for key in ("acc", "nmi", "ari", "seconds"):
                    row[key], row[f"{key}_sd"] = mean_sd([r[key] for r in results])
                row["peak_mb"] = max(r["peak_mb"] for r in results)
                summary.append(row)
                print(f"{dataset} {method} ({name}): acc {row['acc']:.3f} ± {row['acc_sd']:.3f}", flush=True)
    mark_baseline_comparison(summary)
    print()
    print_table(
        summary,
        [
            "dataset",
            "method",
            "input",
            "device",
            "acc",
            "acc_sd",
            "nmi",
            "ari",
            "seconds",
            "peak_mb",
            "beats_baselines",
        ],
    )
    out = args.out or f"benchmarks/out/quality{'-' + folder_name(args.folder) if args.folder else ''}.json"
    write_json(out, {"machine": machine_info(), "seeds": seeds, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
