"""SOURCE -> samples in one call, skipping (and reporting) bad files: `load_images` for a fit,
`load_like` for new samples that a fitted model must read as it read its training samples."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from clusterkit import console
from clusterkit.errors import InputError
from clusterkit.data.builtin import load_builtin
from clusterkit.data.decode import auto_size, decode_many, is_grayscale, open_image, to_array
from clusterkit.data.samples import ImageSet, SampleKind, Samples
from clusterkit.data.sources import BUILTIN_PREFIX, ImageFile, is_builtin, list_source


def load_images(
    source: str,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    max_image_size: int = 64,
    nul_separated: bool = False,
    stdin: TextIO | None = None,
) -> ImageSet:
    """Decode every image of `source` to one size and channel count.

    Unset `image_size`/`channels` follow the first readable image (its size shrunk to
    `max_image_size`, grayscale kept as one channel), so 8x8 digits stay 8x8 and photos are not
    blown up to megapixel vectors. Unreadable files are skipped with a warning each.
    """
    if is_builtin(source):
        images = load_builtin(source[len(BUILTIN_PREFIX) :])
        if image_size is None and channels is None:
            return images
        return resample(images, image_size, channels)
    files = list_source(source, nul_separated=nul_separated, stdin=stdin)
    size, channels = _resolve_shape(files, image_size, channels, max_image_size)
    with console.progress("decoding", total=len(files)) as bar:
        decoded = decode_many([f.path for f in files], size, channels, on_done=bar.advance)
    paths, arrays, skipped = [], [], []
    for file, result in zip(files, decoded):
        if isinstance(result, Exception):
            reason = _reason(result)
            console.warn(f"skipped {file.name}: {reason}")
            skipped.append((file.name, reason))
        else:
            paths.append(file.name)
            arrays.append(result)
    if skipped:
        console.warn(f"{len(skipped)} of {len(files)} files skipped as unreadable")
    if not arrays:
        raise InputError(f"none of the {len(files)} files in {source} could be read as an image")
    return ImageSet(paths=paths, pixels=np.stack(arrays), skipped=skipped)


def load_like(
    source: str, kind: SampleKind, shape: tuple[int, ...], nul_separated: bool = False, stdin: TextIO | None = None
) -> Samples:
    """The samples of `source` as a model fitted on `kind` samples of one `shape` takes them."""
    if kind == "pixels":
        channels, height, width = shape
        return load_images(source, image_size=(height, width), channels=channels, nul_separated=nul_separated,
                           stdin=stdin)
    raise InputError(f"this clusterkit cannot load {kind!r} samples")


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.replace(str(exc.filename), "").strip(" :'\"") if getattr(exc, "filename", None) else text


def _resolve_shape(
    files: list[ImageFile], image_size, channels, max_image_size: int
) -> tuple[tuple[int, int], int]:
    """Size and channels from options, or from the first file that opens."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is not None and channels is not None:
        return tuple(image_size), channels
    for file in files:
        try:
            img = open_image(file.path)
        except Exception:
            continue
        size = tuple(image_size) if image_size is not None else auto_size(img.width, img.height, max_image_size)
        return size, channels if channels is not None else (1 if is_grayscale(img) else 3)
    raise InputError(f"none of the {len(files)} files could be read as an image")


def resample(images: ImageSet, image_size, channels=None) -> ImageSet:
    """Resize / recolour an in-memory set (builtin data, or a method's working size) exactly as files
    would be decoded."""
    from PIL import Image

    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = tuple(image_size) if image_size is not None else images.size
    channels = channels or images.channels
    mode = "L" if images.channels == 1 else "RGB"
    arrays = []
    for px in images.pixels:
        img = Image.fromarray(px[0] if images.channels == 1 else px.transpose(1, 2, 0), mode=mode)
        arrays.append(to_array(img, size, channels))
    return ImageSet(paths=images.paths, pixels=np.stack(arrays), labels=images.labels)
