"""SOURCE -> image files: a folder (recursive), a .txt list, '-' for stdin, or builtin:NAME."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class ImageFile:
    """`name` is what outputs show (relative to the folder, '/'-separated); `path` is what we open."""

    name: str
    path: Path


def is_builtin(source: str) -> bool:
    return source.startswith(BUILTIN_PREFIX)


def list_folder(folder: Path) -> list[ImageFile]:
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    return [ImageFile(name, folder / name) for name in files]


def read_list(stream: TextIO, null: bool, base: Path) -> list[ImageFile]:
    """Paths one per line (or NUL-separated); relative paths resolve against `base`."""
    text = stream.read()
    entries = text.split("\0") if null else text.splitlines()
    files = []
    for entry in entries:
        entry = entry if null else entry.strip()
        if not entry:
            continue
        path = Path(entry)
        files.append(ImageFile(entry.replace("\\", "/"), path if path.is_absolute() else base / path))
    return files


def list_source(source: str, null: bool = False, stdin: TextIO | None = None) -> list[ImageFile]:
    """Files named by a folder, list file or stdin; raises InputError when there are none."""
    if source == "-":
        files = read_list(stdin or sys.stdin, null, Path.cwd())
        where = "standard input"
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"source not found: {source}")
        if path.is_dir():
            files = list_folder(path)
            where = f"folder {source}"
        elif path.suffix.lower() == ".txt":
            with path.open(encoding="utf-8") as fh:
                files = read_list(fh, null, Path.cwd())
            where = f"list {source}"
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            files = [ImageFile(path.name, path)]
            where = source
        else:
            raise InputError(f"source {source} is neither a folder, a .txt list of paths, '-' nor builtin:NAME")
    if not files:
        raise InputError(f"no image files in {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files
