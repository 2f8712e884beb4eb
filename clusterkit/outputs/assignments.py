"""Assignment tables (`path,cluster,confidence[,p0..]`) as CSV, JSON or JSON lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from typing import IO, Literal

import numpy as np

from clusterkit.data.samples import Samples, VolumeSet

Format = Literal["csv", "json", "jsonl"]
FORMATS: tuple[str, ...] = ("csv", "json", "jsonl")


def hard_assignments(proba: np.ndarray, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster and confidence per row; `labels` (a fitted model's `labels_`) replace the argmax for
    the training samples, where a method fixed them at fit."""
    clusters = proba.argmax(axis=1) if labels is None else np.asarray(labels)
    return clusters, proba[np.arange(len(proba)), clusters]


def _records(
    paths: list[str],
    proba: np.ndarray,
    clusters: np.ndarray,
    confidence: np.ndarray,
    probs: bool,
    columns: dict[str, Sequence],
) -> Iterator[dict]:
    for i, path in enumerate(paths):
        row = {"path": path, "cluster": int(clusters[i]), "confidence": round(float(confidence[i]), 6)}
        row.update({name: _cell(values[i]) for name, values in columns.items()})
        if probs:
            row.update({f"p{j}": round(float(p), 6) for j, p in enumerate(proba[i])})
        yield row


def _cell(value: str | float) -> str | float:
    return value if isinstance(value, str) else round(float(value), 6)


def sample_columns(samples: Samples) -> dict[str, Sequence]:
    """The columns a sample set adds to its rows: `kind` (image or volume) where a source may hold
    volumes, so that a mixed folder's table says which file was which."""
    return {"kind": list(samples.file_kinds)} if isinstance(samples, VolumeSet) else {}


def write_assignments(
    stream: IO[str],
    paths: list[str],
    proba: np.ndarray,
    labels: np.ndarray | None = None,
    fmt: Format = "csv",
    probs: bool = False,
    columns: dict[str, Sequence] | None = None,
) -> None:
    """One row per path; `columns` are extra per-sample values (a volume source's `kind`, GEDI's
    `energy`) after the confidence, in their order."""
    columns = columns or {}
    clusters, confidence = hard_assignments(proba, labels)
    records = _records(paths, proba, clusters, confidence, probs, columns)
    if fmt == "json":
        json.dump(list(records), stream, indent=1)
        stream.write("\n")
    elif fmt == "jsonl":
        for record in records:
            stream.write(json.dumps(record) + "\n")
    else:
        fields = ["path", "cluster", "confidence", *columns] + (
            [f"p{j}" for j in range(proba.shape[1])] if probs else []
        )
        # A carriage return inside a path is not quoted under QUOTE_MINIMAL with a "\n" terminator,
        # and readers take it for a line end: then every text field is quoted.
        carriage = any("\r" in path for path in paths)
        writer = csv.DictWriter(
            stream,
            fieldnames=fields,
            lineterminator="\n",
            quoting=csv.QUOTE_NONNUMERIC if carriage else csv.QUOTE_MINIMAL,
        )
        writer.writeheader()
        for record in records:
            writer.writerow(record)


def read_assignments(path: str) -> dict[str, str]:
    from clusterkit.data.labels import read_path_table

    return {
        key: row["cluster"].strip() for key, row in read_path_table(path, ("path", "cluster"), "assignments").items()
    }
