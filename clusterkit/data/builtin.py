"""Data sets that ship with the dependencies: scikit-learn's digits, a seeded occluded variant,
crops of scikit-learn's two sample photographs (real RGB images), and volumes stacked from the
digits."""

from __future__ import annotations

import numpy as np

from clusterkit.data.samples import ImageSet, VolumeSet
from clusterkit.errors import InputError

OCCLUSION_SEED = 0
OCCLUSION_FRACTION = 0.25
CROPS_PER_PHOTO, CROP_SIZE, CROP_SEED = 150, 64, 0
VOLUMES_PER_CLASS, VOLUME_DEPTHS, VOLUME_CANVAS, VOLUME_SEED = 30, (6, 12), 10, 0
VOLUME_DEGREES, VOLUME_NOISE, VOLUME_PLACE, VOLUME_JITTER = 15.0, 8.0, 2, 1


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
    for img, top, left in zip(out, tops, lefts, strict=True):
        img[:, top : top + side_h, left : left + side_w] = 0
    return out


def _digits_occluded() -> tuple[np.ndarray, list[str]]:
    pixels, labels = _digits()
    return occlude(pixels), labels


def _photo_crops() -> tuple[np.ndarray, list[str]]:
    """Real RGB images from the two photographs scikit-learn ships (a temple in China, a flower):
    square crops of 64 to 160 px at seeded random places, resized to 64 x 64; the class is the photo.
    Colour and texture statistics differ between the photos, but many crops are sky, leaves or
    shadow that pixel distances confuse."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(CROP_SEED)
    crops, labels = [], []
    for photo, name in zip(load_sample_images().images, ("china", "flower"), strict=True):
        h, w, _ = photo.shape
        for _ in range(CROPS_PER_PHOTO):
            side = int(rng.integers(CROP_SIZE, 161))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crop = Image.fromarray(photo[top : top + side, left : left + side])
            crops.append(np.asarray(crop.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)))
            labels.append(name)
    return np.stack(crops).transpose(0, 3, 1, 2).copy(), labels


def _digit_volumes() -> VolumeSet:
    """300 volumes, 30 per digit class, each a stack of 6 to 12 slices (depth drawn per volume),
    seeded. Like an object in a scan, each volume's digits sit at one place of a 10 x 10 canvas
    (an offset of 0 to 2 px each way, drawn per volume) and each slice is another cross-section:
    a different real digit of the volume's class, moved by up to 1 px and rotated by up to 15
    degrees either way, with Gaussian noise (sd 8 of 255) over the canvas; zeros pad the stack to 12
    slices. The class is legible in any slice, but a flattened volume is a poor vector: the same
    position holds different digits in two volumes of one class, shifted differently, and depths
    differ, so k-means and spectral clustering on the flattened volumes are near chance. A method
    that recognises the digit in each slice and pools over the slices is not."""
    from PIL import Image

    pixels, labels = _digits()
    rng = np.random.default_rng(VOLUME_SEED)
    targets = np.array(labels)
    low, high = VOLUME_DEPTHS
    side, digit = VOLUME_CANVAS, pixels.shape[-1]
    voxels = np.zeros((10 * VOLUMES_PER_CLASS, high, 1, side, side), dtype=np.uint8)
    depths, volume_labels = [], []
    for row, label in enumerate(np.repeat(np.unique(targets), VOLUMES_PER_CLASS)):
        depth = int(rng.integers(low, high + 1))
        members = rng.choice(np.flatnonzero(targets == label), size=depth, replace=False)
        place = rng.integers(0, VOLUME_PLACE + 1, size=2)
        for z, member in enumerate(members):
            angle = float(rng.uniform(-VOLUME_DEGREES, VOLUME_DEGREES))
            rotated = np.asarray(Image.fromarray(pixels[member, 0]).rotate(angle, Image.Resampling.BILINEAR))
            top, left = np.clip(place + rng.integers(-VOLUME_JITTER, VOLUME_JITTER + 1, size=2), 0, side - digit)
            canvas = np.zeros((side, side))
            canvas[top : top + digit, left : left + digit] = rotated
            canvas += rng.normal(0.0, VOLUME_NOISE, size=canvas.shape)
            voxels[row, z, 0] = np.rint(np.clip(canvas, 0, 255))
        depths.append(depth)
        volume_labels.append(str(label))
    return VolumeSet(
        paths=[f"volumes/{i:05d}.npy" for i in range(len(voxels))],
        voxels=voxels,
        depths=np.array(depths, dtype=np.int64),
        file_kinds=["volume"] * len(voxels),
        labels=volume_labels,
    )


BUILTINS = {
    "digits": (_digits, "scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes"),
    "digits-occluded": (_digits_occluded, "digits with a black square over a quarter of each image (seed 0)"),
    "photo-crops": (_photo_crops, "300 RGB 64x64 crops of scikit-learn's two sample photos, 2 classes (seed 0)"),
    "digit-volumes": (
        _digit_volumes,
        "300 volumes of 6-12 10x10 slices, each another rotated digit of the volume's class (seed 0)",
    ),
}


def load_builtin(name: str) -> ImageSet | VolumeSet:
    if name not in BUILTINS:
        raise InputError(f"unknown built-in data set {name!r}; available: {', '.join(BUILTINS)}")
    made = BUILTINS[name][0]()
    if isinstance(made, VolumeSet):
        return made
    pixels, labels = made
    paths = [f"images/{i:05d}.png" for i in range(len(pixels))]
    return ImageSet(paths=paths, pixels=pixels, labels=labels)
