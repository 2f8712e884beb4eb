"""`datasets export`: a built-in set as PNG files (a volume set as .npy arrays) plus labels.csv, to
try the tool on real files."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from clusterkit.data.builtin import load_builtin
from clusterkit.data.decode import to_image
from clusterkit.data.samples import ImageSet, VolumeSet
from clusterkit.errors import InputError
from clusterkit.io import atomic_write_text


def export_builtin(name: str, folder: str | Path, scale: int = 1, rgb: bool = False) -> int:
    """Write folder/images/NNNNN.png (a volume set: folder/volumes/NNNNN.npy, D x H x W[x C] uint8,
    each at its own depth) and folder/labels.csv; `scale` upsamples, `rgb` saves grayscale sets as
    3-channel PNGs (neither applies to volumes). Colour sets (photo-crops) are always saved in colour. `folder` must be
    new or empty (else InputError, nothing written): exporting over another set would mix its
    stale images with a labels.csv that lists only the new ones."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"cannot export into {folder}: it is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise InputError(f"cannot export into {folder}: the folder is not empty; choose a new or empty folder")
    images = load_builtin(name)
    subfolder = (folder / images.paths[0]).parent
    try:
        subfolder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {subfolder}: {exc.strerror or exc}") from None
    if isinstance(images, VolumeSet):
        _write_volumes(images, folder)
    else:
        _write_images(images, folder, scale, rgb)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(zip(images.paths, images.labels or [], strict=False))  # no labels: header only
    atomic_write_text(folder / "labels.csv", buffer.getvalue())
    return len(images)


def _write_volumes(volumes: VolumeSet, folder: Path) -> None:
    for path, voxels, depth in zip(volumes.paths, volumes.voxels, volumes.depths, strict=True):
        volume = voxels[:depth].transpose(0, 2, 3, 1)  # (D, H, W, C)
        target = folder / path
        tmp = target.with_name(f".{target.name}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, volume[..., 0] if volume.shape[-1] == 1 else volume)
        tmp.replace(target)


def _write_images(images: ImageSet, folder: Path, scale: int, rgb: bool) -> None:
    for path, px in zip(images.paths, images.pixels, strict=True):
        img = to_image(px)
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BICUBIC)
        if rgb:
            img = img.convert("RGB")
        target = folder / path
        tmp = target.with_name(f".{target.name}.tmp")
        img.save(tmp, format="PNG")
        tmp.replace(target)
