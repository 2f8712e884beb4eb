"""Data sets that ship with the dependencies: scikit-learn's digits, and a seeded occluded variant."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .images import ImageSet

OCCLUSION_SEED = 0
OCCLUSION_FRACTION = 0.25


def _digits() -> tuple[np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 intensities -> 0..255, the scale a PNG of the same image has.
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return pixels, [str(int(t)) for t in digits.target]


def occlude(pixels: np.ndarray, fraction: float = OCCLUSION_FRACTION, seed: int = OCCLUSION_SEED) -> np.ndarray:
    """Black square covering about `fraction` of each image's area, at a seeded random position."""
    rng = np.random.default_rng(seed)
    out = pixels.copy()
    _, _, h, w = out.shape
    side_h = max(1, int(round(h * np.sqrt(fraction))))
    side_w = max(1, int(round(w * np.sqrt(fraction))))
    tops = rng.integers(0, h - side_h + 1, size=len(out))
    lefts = rng.integers(0, w - side_w + 1, size=len(out))
    for img, top, left in zip(out, tops, lefts):
        img[:, top : top + side_h, left : left + side_w] = 0
    return out


def _digits_occluded() -> tuple[np.ndarray, list[str]]:
    pixels, labels = _digits()
    return occlude(pixels), labels


BUILTINS = {
    "digits": (_digits, "scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes"),
    "digits-occluded": (_digits_occluded, "digits with a black square over a quarter of each image (seed 0)"),
}


def load_builtin(name: str) -> ImageSet:
    if name not in BUILTINS:
        raise InputError(f"unknown built-in data set {name!r}; available: {', '.join(BUILTINS)}")
    pixels, labels = BUILTINS[name][0]()
    paths = [f"images/{i:05d}.png" for i in range(len(pixels))]
    return ImageSet(paths=paths, pixels=pixels, labels=labels)
