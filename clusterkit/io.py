"""Atomic writes: a crash or Ctrl-C never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call `write` on a temporary file in the target's folder, then rename it into place.

    The file gets the mode a plain `open` would give it (0666 less the umask), not mkstemp's private
    0600, so that a shared run folder stays readable to those who could read it before.
    A target that exists and is not a regular file (`--output /dev/null`, a named pipe) is written
    in place: renaming onto it would replace the device or pipe with a file (as root, /dev/null).
    """
    path = Path(path)
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        _write_in_place(path, write, binary)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else _TEXT)) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    import torch

    atomic_write(path, lambda fh: torch.save(obj, fh), binary=True)
