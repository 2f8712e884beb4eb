"""Out-of-distribution screening with GEDI's energy: fit on part of the digits, then score the
held-out digits against images of other sources, AUROC per source (higher energy = out).

    python benchmarks/gedi_ood.py --fashion /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

Sources: Fashion-MNIST items shrunk to 8x8 (Pillow, bilinear; needs Debian's `dataset-fashion-mnist`
or any IDX file), uniform noise, and the held-out digits inverted (255 - x). The energy is what
`clusterkit assign --energy` writes. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import machine_info, print_table, write_json
from idx_to_folder import read_idx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion", type=Path, default=None, help="Fashion-MNIST images, IDX (optional)")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of the digits kept out of the fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/out/gedi_ood.json")
    args = parser.parse_args()

    from PIL import Image
    from sklearn.metrics import roc_auc_score

    from clusterkit import load_images
    from clusterkit.data import ImageSet
    from clusterkit.methods.gedi import GEDI

    digits = load_images("builtin:digits")
    order = np.random.default_rng(args.seed).permutation(len(digits))
    cut = int(len(digits) * (1 - args.held_out))
    train, held_out = digits.subset(order[:cut]), digits.subset(order[cut:])
    start = time.perf_counter()
    model = GEDI(k=10, seed=args.seed, device=args.device).fit(train)
    seconds = time.perf_counter() - start
    n = len(held_out)

    def images(pixels: np.ndarray) -> ImageSet:
        return ImageSet(paths=[str(i) for i in range(len(pixels))], pixels=pixels)

    rng = np.random.default_rng(args.seed + 1)
    sources = {
        "uniform noise": rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8),
        "inverted digits": 255 - held_out.pixels,
    }
    if args.fashion is not None:
        items = read_idx(args.fashion)[rng.choice(len(read_idx(args.fashion)), n, replace=False)]
        small = [np.asarray(Image.fromarray(item).resize((8, 8), Image.BILINEAR)) for item in items]
        sources["Fashion-MNIST items (8x8)"] = np.stack(small)[:, None]
    inside = model.energy(held_out)
    rows = []
    for name, pixels in sources.items():
        outside = model.energy(images(pixels))
        truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
        auroc = roc_auc_score(truth, np.r_[inside, outside])
        rows.append({"source": name, "images": len(outside), "auroc": round(float(auroc), 4),
                     "energy_in": round(float(inside.mean()), 3), "energy_out": round(float(outside.mean()), 3)})  # fmt: skip
    print(f"gedi on {len(train)} digits in {seconds:.0f} s; {n} held-out digits are the in-distribution images")
    print_table(rows, ["source", "images", "auroc", "energy_in", "energy_out"])
    write_json(args.out, {"machine": machine_info(), "seed": args.seed, "fit_seconds": seconds, "rows": rows})


if __name__ == "__main__":
    main()
