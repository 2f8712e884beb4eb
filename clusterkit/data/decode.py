"""Decoding files into uint8 arrays with Pillow: EXIF orientation applied, bad files reported."""

from __future__ import annotations

import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # Pillow opens 16-bit PNG/TIFF as I;16 or I
_GRAYSCALE_MODES = {"1", "L", "LA", "F", "P;L"} | _SIXTEEN_BIT_MODES


class NotRegularFile(OSError):
    """A pipe, device, socket or folder: opening a pipe or a device like /dev/stdin blocks forever."""


def open_image(path: str | os.PathLike) -> Image.Image:
    """Fully decoded image with EXIF orientation applied (raises on corrupt or truncated files, and
    on anything but a regular file, checked after following symlinks and before opening)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotRegularFile("not a regular file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBomb/EXIF chatter; real errors still raise
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)


def is_grayscale(img: Image.Image) -> bool:
    if img.mode == "P":
        palette = img.convert("RGB")
        arr = np.asarray(palette)
        return bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    return img.mode in _GRAYSCALE_MODES


_BIT_DEPTH_MAXIMA = (255, 1023, 4095, 16383, 65535)  # 8, 10, 12, 14 and 16 bits


def eight_bit(img: Image.Image) -> Image.Image:
    """High-bit-depth grayscale scaled to 8 bits, so that neither a 12-bit scan nor a float image
    turns black or white. Integer samples are divided by the largest value of the smallest bit
    depth (8, 10, 12, 14, 16) that holds the image's maximum: full-range 16-bit data is /257 and
    12-bit data in a 16-bit file /4095*255, so 0 stays black and images of one depth stay
    comparable. Float samples in [0, 1] are x 255 (the usual convention). Data that fits neither
    (floats outside [0, 1], negative or above-16-bit integers) is stretched from its own minimum
    to its maximum; non-finite values count as the minimum. Other modes pass through."""
    if img.mode not in _SIXTEEN_BIT_MODES and img.mode != "F":
        return img
    values = np.asarray(img, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    values = np.where(np.isfinite(values), values, low)
    if img.mode == "F" and low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif img.mode != "F" and low >= 0 and high <= _BIT_DEPTH_MAXIMA[-1]:
        values = values * (255.0 / next(m for m in _BIT_DEPTH_MAXIMA if high <= m))
    else:
        values = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8), mode="L")


def to_array(img: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """(C, H, W) uint8 at `size` = (height, width); alpha is composited onto black."""
    img = eight_bit(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("L" if channels == 1 else "RGB")
    if (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def to_image(pixels: np.ndarray) -> Image.Image:
    """A (C, H, W) uint8 array (what `to_array` makes) back as a Pillow image: L or RGB."""
    return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))


def auto_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The image's own (height, width), shrunk so that the longer side is at most `max_side`."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_many(
    paths: list[Path], size: tuple[int, int], channels: int, on_done=None, workers: int = 4
) -> list[np.ndarray | Exception]:
    """Decode in threads (Pillow releases the GIL while decoding); a file's errors are returned, not
    raised, except MemoryError: running out of memory says nothing about the file, so it is raised."""

    def one(path: Path) -> np.ndarray | Exception:
        try:
            return to_array(open_image(path), size, channels)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001  # any other decoder failure means "skip this file"
            return exc
        finally:
            if on_done is not None:
                on_done()

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(one, paths))
    finally:
        pool.shutdown(cancel_futures=True)  # after a MemoryError (or Ctrl-C), decode no more files
