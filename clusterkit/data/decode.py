"""Decoding files into uint8 arrays with Pillow: EXIF orientation applied, bad files reported."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # Pillow opens 16-bit PNG/TIFF as I;16 or I
_GRAYSCALE_MODES = {"1", "L", "LA", "F", "P;L"} | _SIXTEEN_BIT_MODES


def open_image(path: Path) -> Image.Image:
    """Fully decoded image with EXIF orientation applied (raises on corrupt or truncated files)."""
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


def eight_bit(img: Image.Image) -> Image.Image:
    """High-bit-depth grayscale scaled to 8 bits by its format's range, not clipped at 255 (which
    would turn most of a 16-bit image white): 16-bit and 32-bit integer samples / 257 (32-bit taken
    as 16-bit data, as Pillow loads 16-bit files); float samples x 255 when they lie in [0, 1]
    (the usual convention), else clipped to [0, 255]. Other modes pass through."""
    if img.mode not in _SIXTEEN_BIT_MODES and img.mode != "F":
        return img
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        values = values * 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else values
    else:
        values = values / 257.0
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


def auto_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The image's own (height, width), shrunk so that the longer side is at most `max_side`."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_many(
    paths: list[Path], size: tuple[int, int], channels: int, on_done=None, workers: int = 4
) -> list[np.ndarray | Exception]:
    """Decode in threads (Pillow releases the GIL while decoding); errors are returned, not raised."""

    def one(path: Path) -> np.ndarray | Exception:
        try:
            return to_array(open_image(path), size, channels)
        except Exception as exc:  # any decoder failure means "skip this file"
            return exc
        finally:
            if on_done is not None:
                on_done()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, paths))
