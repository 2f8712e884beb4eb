"""An IDX image set (the MNIST file format: MNIST, Fashion-MNIST, KMNIST) as a folder of PNGs plus labels.csv.

    python benchmarks/idx_to_folder.py t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz data/fashion --n 2000

Makes a real data set other than the built-in ones for `benchmarks/quality.py --folder`: nothing is
downloaded; bring the files (e.g. Debian's `dataset-fashion-mnist` package puts Fashion-MNIST under
/usr/share/datasets/fashion-mnist/). `--n` draws a seeded random subset (all images when 0).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzip or plain): magic 0x0000 | type 0x08 (ubyte) | number of dimensions, then sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise SystemExit(f"error: {path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=2000, help="seeded random subset size; 0: all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from PIL import Image

    from clusterkit.io import atomic_write, atomic_write_text

    images, labels = read_idx(args.images), read_idx(args.labels)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise SystemExit(f"error: expected N images (N, H, W) and N labels, got {images.shape} and {labels.shape}")
    chosen = np.arange(len(images))
    if 0 < args.n < len(images):
        chosen = np.sort(np.random.default_rng(args.seed).permutation(len(images))[: args.n])
    if (args.out / "images").is_dir() and any((args.out / "images").iterdir()):
        raise SystemExit(f"error: {args.out / 'images'} already holds files; remove it or choose another folder")
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    rows = ["path,label"]
    for i in chosen:
        name = f"{i:05d}.png"
        image = Image.fromarray(images[i], mode="L")
        atomic_write(args.out / "images" / name, lambda fh, image=image: image.save(fh, format="PNG"), binary=True)
        rows.append(f"{name},{labels[i]}")
    atomic_write_text(args.out / "labels.csv", "\n".join(rows) + "\n")
    print(f"{len(chosen)} images -> {args.out / 'images'}, labels -> {args.out / 'labels.csv'}")


if __name__ == "__main__":
    main()
