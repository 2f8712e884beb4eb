"""Ground-truth labels files (CSV with `path,label`) and joining them to assignments by path."""

from __future__ import annotations

import csv
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
                raise InputError(
                    f"{what} file {path} needs columns {','.join(columns)}; found {','.join(header) or 'no header'}"
                )
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


def read_labels(path: str | Path) -> dict[str, str]:
    return {key: row["label"].strip() for key, row in read_path_table(path, ("path", "label"), "labels").items()}


def match_labels(paths: list[str], labels: dict[str, str], allow_missing: bool = False) -> list[str | None]:
    """Label of each path; paths without a label are an error naming a few, unless allowed."""
    missing = [p for p in paths if p not in labels]
    if missing and not allow_missing:
        example = next(iter(labels))
        raise InputError(
            f"{len(missing)} of {len(paths)} images have no label (e.g. {', '.join(missing[:3])}); "
            f"the labels file lists paths like {example!r}; paths must be written relative to the same folder"
        )
    return [labels.get(p) for p in paths]
