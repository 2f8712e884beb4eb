"""Ground-truth labels files (CSV with `path,label`) and joining them to assignments by path."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from clusterkit.errors import InputError


def read_path_table(path: str | Path, columns: tuple[str, ...], what: str) -> dict[str, dict[str, str]]:
    """Rows of a CSV keyed by its `path` column; the named columns must exist, in every row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        # -sig: a spreadsheet's byte-order mark; surrogateescape: paths whose bytes are not UTF-8, as
        # the filesystem (and our own outputs) have them.
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                found = quoted(",".join(header)) if header else "no header"
                raise InputError(f"{what} file {path} needs columns {','.join(columns)}; found {found}")
            rows: dict[str, dict[str, str]] = {}
            for line, row in enumerate(reader, start=2):
                short = [c for c in columns if row.get(c) is None]
                if short:
                    raise InputError(f"{what} file {path}, line {line}: no {','.join(short)} field")
                key = row["path"]  # exact: file names may begin or end with spaces
                if key in rows:
                    raise InputError(f"{what} file {path} lists {key!r} twice")
                rows[key] = row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{what} file {path} is not a readable CSV: {exc}") from None
    if not rows:
        raise InputError(f"{what} file {path} has no rows")
    return rows


def quoted(text: str, limit: int = 60) -> str:
    """`text` for an error message: one line, control bytes escaped (repr), cut to about `limit`."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def read_labels(path: str | Path) -> dict[str, str]:
    return {key: row["label"].strip() for key, row in read_path_table(path, ("path", "label"), "labels").items()}


def match_labels(
    paths: list[str],
    labels: dict[str, str],
    allow_missing: bool = False,
    root: Path | None = None,
    labels_dir: Path | None = None,
) -> list[str | None]:
    """Label of each image path; images without a label are an error naming a few, unless allowed.

    A label path matches an image path written the same way. With `root` (the folder the image
    paths are relative to) and `labels_dir` (the labels file's folder), it also matches the image
    that it names taken relative to `labels_dir`, compared as absolute paths with the two folders'
    symlinks resolved: so a labels file written by `datasets export` joins whichever folder of the
    export is given. (The folders only: resolving every entry would cost seconds on a large file.)"""
    found = {p: labels[p] for p in paths if p in labels}
    if root is not None and labels_dir is not None and len(found) < len(paths):
        base, here = os.path.realpath(labels_dir), os.path.realpath(root)
        by_file = {os.path.normpath(os.path.join(base, key)): key for key in labels}
        keys = {p: p for p in found}  # label path -> the image it was matched to
        for image in [p for p in paths if p not in found]:
            key = by_file.get(os.path.normpath(os.path.join(here, image)))
            if key is None:
                continue
            if key in keys:
                raise InputError(
                    f"the label of {quoted(key)} matches several images ({quoted(keys[key])}, {quoted(image)}); "
                    "write the labels file's paths as the images' paths"
                )
            keys[key] = image
            found[image] = labels[key]
    missing = [p for p in paths if p not in found]
    if missing and not allow_missing:
        example = next(iter(labels))
        raise InputError(
            f"{len(missing)} of {len(paths)} images have no label (e.g. {', '.join(missing[:3])}); "
            f"the labels file lists paths like {quoted(example)}; a label path must be the image's path "
            "as written in the outputs, or name the same file relative to the labels file's folder"
        )
    return [found.get(p) for p in paths]
