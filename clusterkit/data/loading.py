"""SOURCE -> samples in one call, skipping (and reporting) bad files: `load_images` for a fit,
`load_like` for new samples that a fitted model must read as it read its training samples."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TextIO

import numpy as np

from clusterkit import console
from clusterkit.data.builtin import load_builtin
from clusterkit.data.decode import auto_size, decode_many, is_grayscale, open_image, to_array, to_image
from clusterkit.data.samples import ImageSet, SampleKind, Samples
from clusterkit.data.sources import BUILTIN_PREFIX, ImageFile, is_builtin, list_source
from clusterkit.errors import ClusterkitError, InputError


def load_images(
    source: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    max_image_size: int = 64,
    nul_separated: bool = False,
    stdin: TextIO | None = None,
) -> ImageSet:
    """Decode every image of `source` to one size and channel count.

    Unset `image_size`/`channels` follow the first readable image (its size shrunk to
    `max_image_size`, grayscale kept as one channel), so 8x8 digits stay 8x8 and photos are not
    blown up to megapixel vectors. Unreadable files (and pipes, devices: anything but a regular
    file) are skipped with a warning each. A size whose pixels cannot fit in memory is refused
    before decoding, and running out of memory while decoding is one error, not a skip per file.
    """
    source = os.fspath(source)
    if is_builtin(source):
        images = load_builtin(source[len(BUILTIN_PREFIX) :])
        if image_size is None and channels is None:
            return images
        return resample(images, image_size, channels)
    files = list_source(source, nul_separated=nul_separated, stdin=stdin)
    try:
        size, channels = _resolve_shape(files, image_size, channels, max_image_size, source)
        check_memory(len(files), channels, size)
        with console.progress("decoding", total=len(files)) as bar:
            decoded = decode_many([f.path for f in files], size, channels, on_done=bar.advance)
    except MemoryError:
        raise ClusterkitError(
            f"ran out of memory decoding the images of {source}; choose a smaller image_size or fewer images"
        ) from None
    paths, arrays, skipped = [], [], []
    for file, result in zip(files, decoded, strict=True):
        if isinstance(result, Exception):
            reason = _reason(result, file.path)
            console.warn(f"skipped {file.name}: {reason}")
            skipped.append((file.name, reason))
        else:
            paths.append(file.name)
            arrays.append(result)
    if skipped:
        console.warn(f"{len(skipped)} of {len(files)} files skipped as unreadable")
    if not arrays:
        raise InputError(_none_readable(source, skipped))
    return ImageSet(paths=paths, pixels=np.stack(arrays), skipped=skipped)


def load_like(
    source: str | os.PathLike,
    kind: SampleKind,
    shape: tuple[int, ...],
    nul_separated: bool = False,
    stdin: TextIO | None = None,
) -> Samples:
    """The samples of `source` as a model fitted on `kind` samples of one `shape` takes them."""
    if kind == "pixels":
        channels, height, width = shape
        return load_images(
            source, image_size=(height, width), channels=channels, nul_separated=nul_separated, stdin=stdin
        )
    raise InputError(f"this clusterkit cannot load {kind!r} samples")


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable (free plus reclaimable cache, what psutil
    reports; the free pages of sysconf alone would refuse sizes that fit), capped by a container's
    cgroup limit; None where the system says neither."""
    room = None
    try:
        with open("/proc/meminfo") as fh:
            room = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, ValueError, StopIteration):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            room = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int((cgroup / "memory.current").read_text())
            room = left if room is None else min(room, left)
    except (OSError, ValueError):
        pass
    return room


def check_memory(n: int, channels: int, size: tuple[int, int]) -> None:
    """Refuse up front a decoded size that cannot fit (the kernel's OOM killer gives no message)."""
    need = n * channels * size[0] * size[1]  # uint8 N x C x H x W
    room = available_memory()
    if room is not None and need > room:
        raise InputError(
            f"{n} images of {channels} x {size[0]} x {size[1]} pixels need {_bytes(need)} of memory "
            f"(N x C x H x W bytes of uint8), but {_bytes(room)} is available; choose a smaller image_size"
        )


def _bytes(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _reason(exc: Exception, path: Path) -> str:
    """The error's text without the path (the warning names the file already)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return exc.strerror  # "No such file or directory"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for form in (repr(str(path)), str(path)):
        text = text.replace(form, "")
    return " ".join(text.split()).strip(" :") or type(exc).__name__


def _none_readable(source: str, reasons: list[tuple[str, str]], shown: int = 3) -> str:
    """One line naming the first few files and why each failed, so the user sees the cause."""
    examples = "; ".join(f"{name}: {reason}" for name, reason in reasons[:shown])
    more = f"; and {len(reasons) - shown} more" if len(reasons) > shown else ""
    where = "standard input" if source == "-" else source
    return f"none of the {len(reasons)} files in {where} could be read as an image ({examples}{more})"


def _resolve_shape(
    files: list[ImageFile], image_size, channels, max_image_size: int, source: str
) -> tuple[tuple[int, int], int]:
    """Size and channels from options, or from the first file that opens."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if image_size is not None and channels is not None:
        return tuple(image_size), channels
    reasons = []
    for file in files:
        try:
            img = open_image(file.path)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001  # a reason to report, whatever the decoder raised
            reasons.append((file.name, _reason(exc, file.path)))
            continue
        size = tuple(image_size) if image_size is not None else auto_size(img.width, img.height, max_image_size)
        return size, channels if channels is not None else (1 if is_grayscale(img) else 3)
    raise InputError(_none_readable(source, reasons))


def resample(images: ImageSet, image_size, channels=None) -> ImageSet:
    """Resize / recolour an in-memory set (builtin data, or a method's working size) exactly as files
    would be decoded."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = tuple(image_size) if image_size is not None else images.size
    channels = channels or images.channels
    check_memory(len(images), channels, size)
    arrays = [to_array(to_image(px), size, channels) for px in images.pixels]
    return ImageSet(paths=images.paths, pixels=np.stack(arrays), labels=images.labels)
