"""SOURCE -> image files: a folder (recursive), a .txt list, '-' for stdin, or builtin:NAME."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from clusterkit.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
VOLUME_SUFFIXES = (".npy", *NIFTI_SUFFIXES)  # a D x H x W[x C] array, or a NIfTI scan
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class ImageFile:
    """`name` is what outputs show (relative to the folder, '/'-separated); `path` is what we open."""

    name: str
    path: Path


def is_volume_file(name: str | os.PathLike) -> bool:
    return os.fspath(name).lower().endswith(VOLUME_SUFFIXES)


def _listed(name: str, volumes: bool) -> bool:
    """Whether a file of this name is a sample: an image, or (where volumes are read) a volume."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES or (volumes and is_volume_file(name))


def is_builtin(source: str | os.PathLike) -> bool:
    return os.fspath(source).startswith(BUILTIN_PREFIX)


def source_root(source: str | os.PathLike) -> Path | None:
    """The folder that the names of a source's files are relative to, as an absolute path, so that
    commands run later (report, export) from another folder open the same files; None for a
    built-in set, whose images are not files."""
    source = os.fspath(source)
    if is_builtin(source):
        return None
    path = Path(source)
    if path.is_dir():
        return path.resolve()
    if _listed(path.name, volumes=True):
        return path.resolve().parent
    return Path.cwd()  # a .txt list or stdin: relative entries resolve against the working folder


def list_folder(folder: Path, volumes: bool = False) -> list[ImageFile]:
    """Image files (and volume files, with `volumes`) below `folder`, sorted by relative name.

    Symlinked folders are followed (each real folder once, so a link cycle ends); subfolders are
    walked in sorted order, so a folder reachable under two names is named by the sorted-first one
    whatever the file system's directory order. Hidden files and folders (names starting with '.':
    .git, .ipynb_checkpoints with its copies, macOS ._ files) are left out. A broken symlink, a pipe
    or a device with an image suffix is kept, so that decoding reports it as skipped rather than it
    vanishing silently.
    """
    names, seen = [], set()
    for root, dirs, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        relative = Path(root).relative_to(folder)
        names.extend((relative / f).as_posix() for f in filenames if not f.startswith(".") and _listed(f, volumes))
    return [ImageFile(name, folder / name) for name in sorted(names)]


def read_list(stream: TextIO, nul_separated: bool, base: Path) -> list[ImageFile]:
    """Paths one per line (or NUL-separated), taken exactly (a name may begin or end with spaces);
    blank lines are skipped; relative paths resolve against `base`. A `\\` is a folder separator (a
    list written on Windows), both in the name shown and in the file opened, so the two never differ."""
    text = stream.read()
    entries = text.split("\0") if nul_separated else text.splitlines()
    files = []
    for entry in entries:
        if not entry.strip():
            continue
        name = entry.replace("\\", "/")
        path = Path(name)
        files.append(ImageFile(name, path if path.is_absolute() else base / path))
    return files


def list_source(
    source: str | os.PathLike, nul_separated: bool = False, stdin: TextIO | None = None, volumes: bool = False
) -> list[ImageFile]:
    """Files named by a folder, list file or stdin (image files, and volume files with `volumes`);
    raises InputError when there are none."""
    source = os.fspath(source)
    if source == "-":
        files = read_list(stdin or sys.stdin, nul_separated, Path.cwd())
        where = "standard input"
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"source not found: {source}")
        if path.is_dir():
            files = list_folder(path, volumes)
            where = f"folder {source}"
        elif path.suffix.lower() == ".txt":
            with path.open(encoding="utf-8", errors="surrogateescape") as fh:  # names as the filesystem has them
                files = read_list(fh, nul_separated, Path.cwd())
            where = f"list {source}"
        elif _listed(path.name, volumes):
            files = [ImageFile(path.name, path)]
            where = source
        else:
            raise InputError(f"source {source} is neither a folder, a .txt list of paths, '-' nor builtin:NAME")
    if not files:
        looked = sorted(IMAGE_SUFFIXES) + (list(VOLUME_SUFFIXES) if volumes else [])
        raise InputError(
            f"no {'image or volume' if volumes else 'image'} files in {where} (looked for {', '.join(looked)})"
        )
    return files
