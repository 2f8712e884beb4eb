"""Volume files -> uint8 slices: `.npy` arrays (D x H x W or D x H x W x C) and NIfTI (`.nii`,
`.nii.gz`, through nibabel, the optional `medical` extra), read lazily (a memory map or nibabel's
array proxy) so that a header tells the depth before any voxel is read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from clusterkit.data.decode import NotRegularFile, to_array, to_image
from clusterkit.data.sources import NIFTI_SUFFIXES
from clusterkit.errors import InputError

WINDOW_PERCENTILES = (0.5, 99.5)  # the intensity window of scans that are not already 8-bit


def _nibabel():
    try:
        import nibabel
    except ImportError:
        raise InputError("reading NIfTI volumes needs nibabel: pip install 'clusterkit[medical]'") from None
    return nibabel


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _open_nifti(path: Path):
    """The NIfTI image (header read, voxels not) and its shape as a 3-D volume (x, y, z)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotRegularFile("not a regular file")
    image = _nibabel().load(path)
    shape = image.shape[:3] if len(image.shape) == 4 and image.shape[3] == 1 else image.shape
    if len(shape) != 3:
        raise ValueError(f"a NIfTI image of shape {image.shape}; clusterkit reads 3-D volumes (x, y, z)")
    return image, tuple(int(s) for s in shape)


def open_volume(path: str | os.PathLike) -> np.ndarray:
    """The volume as an array (D, H, W) or (D, H, W, C), not yet read from disk where the format
    allows. NIfTI's voxel axes are (x, y, z[, t]); slices are taken along z, the acquisition axis of
    most scans, each slice (x, y) as stored."""
    path = Path(path)
    if _is_nifti(path):
        image, shape = _open_nifti(path)
        return np.moveaxis(np.asarray(image.dataobj).reshape(shape), 2, 0)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotRegularFile("not a regular file")
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[3] in (1, 3))):
        raise ValueError(f"an array of shape {array.shape}; a volume is D x H x W or D x H x W x C (C = 1 or 3)")
    if min(array.shape[:3]) < 1:
        raise ValueError(f"an empty array of shape {array.shape}")
    return array


def volume_header(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """(depth, channels, height, width) of a volume as stored, from its header alone (a NIfTI
    header, or the memory-mapped array's shape): no voxel is read."""
    path = Path(path)
    if _is_nifti(path):
        x, y, z = _open_nifti(path)[1]
        depth, channels, height, width = z, 1, x, y  # slices along z, each (x, y) as `open_volume` gives
    else:
        array = open_volume(path)
        depth, (channels, height, width) = int(array.shape[0]), slice_shape(array)
    if min(depth, height, width) < 1:
        raise ValueError("a volume of no slices")
    return depth, channels, height, width


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """Intensities as 0..255: uint8 and boolean data as they are; anything else (CT in Hounsfield
    units, MR in scanner units, floats) windowed to its own 0.5th..99.5th percentile, the usual
    robust window, so that a few hot voxels do not darken the rest. Non-finite voxels count as the
    window's low end."""
    if volume.dtype == np.uint8:
        return np.asarray(volume)
    if volume.dtype == np.bool_:
        return np.asarray(volume).astype(np.uint8) * 255
    values = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = np.percentile(values[finite], WINDOW_PERCENTILES)
    values = np.where(finite, values, low)
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def depth_index(depth: int, max_depth: int) -> np.ndarray:
    """The slices kept of a volume deeper than `max_depth`: evenly spaced (nearest-slice resampling
    along depth), all of them otherwise."""
    if depth <= max_depth:
        return np.arange(depth)
    return np.rint(np.linspace(0, depth - 1, max_depth)).astype(np.intp)


def conform(volume: np.ndarray, size: tuple[int, int], channels: int, max_depth: int) -> np.ndarray:
    """(D, H, W[, C]) -> uint8 (d, C, H', W') with d <= max_depth: slices resized and recoloured as
    images are decoded (`decode.to_array`), so that a slice and a 2-D image of one folder match."""
    kept = np.asarray(volume[depth_index(volume.shape[0], max_depth)])
    eight = to_uint8(kept)
    if eight.ndim == 3:
        eight = eight[:, None]
    else:
        eight = eight.transpose(0, 3, 1, 2)
    return np.stack([to_array(to_image(np.ascontiguousarray(s)), size, channels) for s in eight])


def middle_slice(volume: np.ndarray) -> np.ndarray:
    """A volume's middle slice as uint8 (C, H, W), windowed to that slice's own percentiles (not the
    whole volume's, which would read every voxel): what a report shows of a volume."""
    middle = to_uint8(np.asarray(volume[volume.shape[0] // 2]))
    return middle[None] if middle.ndim == 2 else middle.transpose(2, 0, 1)


def slice_shape(volume: np.ndarray) -> tuple[int, int, int]:
    """(channels, height, width) of a volume's slices as stored."""
    return (int(volume.shape[3]) if volume.ndim == 4 else 1), int(volume.shape[1]), int(volume.shape[2])
