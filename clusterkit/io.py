"""Atomic writes: a crash or Ctrl-C never leaves a half-written output behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from clusterkit.errors import InputError


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call `write` on a temporary file in the target's folder, then rename it into place.

    The file gets the mode a plain `open` would give it (0666 less the umask), not mkstemp's private
    0600, so that a shared run folder stays readable to those who could read it before.
    A target that exists and is not a regular file (`--output /dev/null`, a named pipe) is written
    in place: renaming onto it would replace the device or pipe with a file (as root, /dev/null).
    A target that is a folder, or where no file can be created, is an InputError naming the target.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        _write_in_place(path, write, binary)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else _TEXT)) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:  # e.g. a folder made at `path` meanwhile: name the target, not the temp file
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_TEMP_SUFFIX = ".tmp"


def is_atomic_temp(name: str, target: str) -> bool:
    """Whether the file `name` is a temporary that `atomic_write` of `target` (a file name in the
    same folder) leaves behind when killed mid-write (kill -9): `.TARGET.` + mkstemp's 8 random
    characters + `.tmp`."""
    return re.fullmatch(rf"\.{re.escape(target)}\.[a-z0-9_]{{8}}{re.escape(_TEMP_SUFFIX)}", name) is not None


# surrogateescape: a file name whose bytes are not UTF-8 is written back as those same bytes.
_TEXT = {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}


def _write_in_place(path: Path, write: Callable[[IO[Any]], None], binary: bool) -> None:
    with open(path, "wb" if binary else "w", **({} if binary else _TEXT)) as fh:
        write(fh)


def _umask() -> int:
    """The process umask (reading it means setting it; set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_sha256(path: str | Path) -> str:
    """A file's SHA-256, read in 1 MiB blocks (a weights file or an image need not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import torch

    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)
