"""SOURCE -> samples in one call, skipping (and reporting) bad files: `load_images` for a fit,
`load_like` for new samples that a fitted model must read as it read its training samples."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Literal, TextIO

import numpy as np

from clusterkit import console
from clusterkit.data.builtin import load_builtin
from clusterkit.data.decode import auto_size, decode_many, is_grayscale, open_image, to_array, to_image
from clusterkit.data.samples import ImageSet, SampleKind, Samples, VolumeSet
from clusterkit.data.sources import BUILTIN_PREFIX, ImageFile, is_builtin, is_volume_file, list_source
from clusterkit.data.volumes import conform, open_volume, volume_header
from clusterkit.errors import ClusterkitError, InputError

MAX_DEPTH = 64  # slices kept of a volume, where the method names no depth of its own


def load_images(
    source: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    max_image_size: int = 64,
    nul_separated: bool = False,
    stdin: TextIO | None = None,
    volumes: Literal["warn", "refuse"] = "warn",
) -> ImageSet:
    """Decode every image of `source` to one size and channel count.

    Unset `image_size`/`channels` follow the first readable image (its size shrunk to
    `max_image_size`, grayscale kept as one channel), so 8x8 digits stay 8x8 and photos are not
    blown up to megapixel vectors. Unreadable files (and pipes, devices: anything but a regular
    file) are skipped with a warning each. A size whose pixels cannot fit in memory is refused
    before decoding, and running out of memory while decoding is one error, not a skip per file.
    Volume files in the source are left out with one warning (`volumes="warn"`, a fit of a method
    that reads images only) or refused (`"refuse"`, a model fitted on images).
    """
    source = os.fspath(source)
    if is_builtin(source):
        images = load_builtin(source[len(BUILTIN_PREFIX) :])
        if isinstance(images, VolumeSet):
            raise InputError(f"{source} holds volumes; {_VOLUME_READERS}")
        if image_size is None and channels is None:
            return images
        return resample(images, image_size, channels)
    files = list_source(source, nul_separated=nul_separated, stdin=stdin, volumes=True)
    volume_files = [f.name for f in files if is_volume_file(f.name)]
    if volume_files:
        left = f"{len(volume_files)} volume file{'s' if len(volume_files) > 1 else ''} ({volume_files[0]}{', ...' if len(volume_files) > 1 else ''})"
        if volumes == "refuse" or len(volume_files) == len(files):
            raise InputError(f"{_where(source)} holds {left}, and this takes images; {_VOLUME_READERS}")
        console.warn(f"left out {left}: this method reads images only; {_VOLUME_READERS}")
        files = [f for f in files if not is_volume_file(f.name)]
    return _decode_images(files, image_size, channels, max_image_size, source)


_VOLUME_READERS = "volumes are read by --method iicc and by the classical baselines (kmeans, spectral, gmm)"


def _decode_images(files: list[ImageFile], image_size, channels, max_image_size: int, source: str) -> ImageSet:
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
            skipped.append(_skip(file, result))
        else:
            paths.append(file.name)
            arrays.append(result)
    _report_skipped(skipped, len(files), bool(arrays), source)
    return ImageSet(paths=paths, pixels=np.stack(arrays), skipped=skipped)


def load_source(
    source: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    max_image_size: int = 64,
    max_depth: int = MAX_DEPTH,
    depth: int | None = None,
    nul_separated: bool = False,
    stdin: TextIO | None = None,
) -> ImageSet | VolumeSet:
    """The samples of a source that may hold volumes: an ImageSet where it holds images only (and
    no `depth` is asked), else a VolumeSet in which images are volumes of one slice.

    Slices are sized as `load_images` sizes images (the first readable file decides what is not
    given). Volumes deeper than `max_depth` keep `max_depth` evenly spaced slices; `depth` pads or
    resamples every file to exactly that depth (new samples for a model fitted on volumes). Where
    the decoded voxels would take more than half the memory available, they are decoded into a
    temporary file and read from disk as batches need them.
    """
    source = os.fspath(source)
    if is_builtin(source):
        samples = load_builtin(source[len(BUILTIN_PREFIX) :])
        if isinstance(samples, ImageSet):
            images = samples if image_size is None and channels is None else resample(samples, image_size, channels)
            return images if depth is None else conform_volumes(VolumeSet.from_images(images), depth=depth)
        return conform_volumes(
            samples, image_size, channels, max_depth if depth is None else depth, exact=depth is not None
        )
    files = list_source(source, nul_separated=nul_separated, stdin=stdin, volumes=True)
    if depth is None and not any(is_volume_file(f.name) for f in files):
        return _decode_images(files, image_size, channels, max_image_size, source)
    try:
        return _decode_volumes(
            files,
            image_size,
            channels,
            max_image_size,
            max_depth if depth is None else depth,
            depth is not None,
            source,
        )
    except MemoryError:
        raise ClusterkitError(
            f"ran out of memory decoding the volumes of {source}; choose a smaller image_size or max_depth"
        ) from None


def _decode_volumes(
    files: list[ImageFile], image_size, channels, max_image_size: int, max_depth: int, exact: bool, source: str
) -> VolumeSet:
    size, channels = _resolve_shape(files, image_size, channels, max_image_size, source)
    depths, readable, skipped = [], [], []
    for file in files:
        try:
            depths.append(min(volume_header(file.path)[0], max_depth) if is_volume_file(file.name) else 1)
            readable.append(file)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001  # any reader failure means "skip this file"
            skipped.append(_skip(file, exc))
    depth = max_depth if exact else max(depths, default=1)
    voxels = _allocate((len(readable), depth, channels, *size))
    paths, kinds, kept_depths = [], [], []
    with console.progress("decoding", total=len(readable)) as bar:
        for file in readable:
            try:
                if is_volume_file(file.name):
                    volume = conform(open_volume(file.path), size, channels, depth)
                else:
                    volume = to_array(open_image(file.path), size, channels)[None]
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001
                skipped.append(_skip(file, exc))
            else:
                voxels[len(paths), : len(volume)] = volume
                paths.append(file.name)
                kinds.append("volume" if is_volume_file(file.name) else "image")
                kept_depths.append(len(volume))
            bar.advance()
    _report_skipped(skipped, len(files), bool(paths), source)
    return VolumeSet(
        paths=paths,
        voxels=voxels[: len(paths)],
        depths=np.asarray(kept_depths, dtype=np.int64),
        file_kinds=kinds,
        skipped=skipped,
    )


def _allocate(shape: tuple[int, ...]) -> np.ndarray:
    """Zeros of `shape` (uint8) in memory, or in a temporary file where they would take more than
    half of what is available: the file is unlinked at once and lives as long as the array."""
    need = int(np.prod(shape))
    room = available_memory()
    if room is None or need <= room // 2:
        return np.zeros(shape, dtype=np.uint8)
    console.info(f"the volumes take {_bytes(need)} of the {_bytes(room)} available: decoding them to a temporary file")
    try:
        with tempfile.TemporaryFile(prefix="clusterkit-volumes-") as handle:
            handle.truncate(need)
            return np.memmap(handle, dtype=np.uint8, mode="r+", shape=shape)
    except OSError as exc:
        raise InputError(
            f"the volumes need {_bytes(need)} on disk for a temporary file: {exc.strerror or exc}"
        ) from None


def conform_volumes(
    volumes: VolumeSet, image_size=None, channels=None, depth: int | None = None, exact: bool = True
) -> VolumeSet:
    """An in-memory volume set (a built-in one) at another slice size, channel count or depth, each
    volume conformed as files are (`exact`: the array is `depth` deep, else at most)."""
    size = (
        volumes.size
        if image_size is None
        else ((image_size,) * 2 if isinstance(image_size, int) else tuple(image_size))
    )
    channels = channels or volumes.channels
    depth = volumes.max_depth if depth is None else depth
    if (size, channels, depth) == (volumes.size, volumes.channels, volumes.max_depth):
        return volumes
    conformed = [
        conform(v[:d].transpose(0, 2, 3, 1), size, channels, depth)
        for v, d in zip(volumes.voxels, volumes.depths, strict=True)
    ]
    kept = np.array([len(v) for v in conformed], dtype=np.int64)
    voxels = np.zeros((len(volumes), depth if exact else int(kept.max(initial=1)), channels, *size), dtype=np.uint8)
    for row, volume in zip(voxels, conformed, strict=True):
        row[: len(volume)] = volume
    return VolumeSet(volumes.paths, voxels, kept, volumes.file_kinds, volumes.labels, volumes.skipped)


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
            source,
            image_size=(height, width),
            channels=channels,
            nul_separated=nul_separated,
            stdin=stdin,
            volumes="refuse",
        )
    if kind == "volumes":
        depth, channels, height, width = shape
        return load_source(source, (height, width), channels, depth=depth, nul_separated=nul_separated, stdin=stdin)
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


def _skip(file: ImageFile, exc: Exception) -> tuple[str, str]:
    """Warn that a file is skipped, and why; the (name, reason) that outputs count."""
    reason = _reason(exc, file.path)
    console.warn(f"skipped {file.name}: {reason}")
    return file.name, reason


def _report_skipped(skipped: list[tuple[str, str]], total: int, any_read: bool, source: str) -> None:
    if skipped:
        console.warn(f"{len(skipped)} of {total} files skipped as unreadable")
    if not any_read:
        raise InputError(_none_readable(source, skipped))


def _where(source: str) -> str:
    return "standard input" if source == "-" else source


def _none_readable(source: str, reasons: list[tuple[str, str]], shown: int = 3) -> str:
    """One line naming the first few files and why each failed, so the user sees the cause."""
    examples = "; ".join(f"{name}: {reason}" for name, reason in reasons[:shown])
    more = f"; and {len(reasons) - shown} more" if len(reasons) > shown else ""
    return f"none of the {len(reasons)} files in {_where(source)} could be read ({examples}{more})"


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
            width, height, gray = _first_shape(file)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001  # a reason to report, whatever the decoder raised
            reasons.append((file.name, _reason(exc, file.path)))
            continue
        size = tuple(image_size) if image_size is not None else auto_size(width, height, max_image_size)
        return size, channels if channels is not None else (1 if gray else 3)
    raise InputError(_none_readable(source, reasons))


def _first_shape(file: ImageFile) -> tuple[int, int, bool]:
    """Width, height and whether it is grayscale, of an image or of a volume's slices (from the
    volume's header: the voxels are read once, when the volume is decoded)."""
    if is_volume_file(file.name):
        _, slice_channels, height, width = volume_header(file.path)
        return width, height, slice_channels == 1
    img = open_image(file.path)
    return img.width, img.height, is_grayscale(img)


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
