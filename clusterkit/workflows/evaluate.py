"""Joining an assignments file to a labels file and scoring it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterkit.data.labels import read_labels
from clusterkit.errors import InputError
from clusterkit.metrics import evaluate
from clusterkit.outputs.assignments import read_assignments


def evaluate_files(assignments: str | Path, labels: str | Path, allow_missing: bool = False) -> dict[str, Any]:
    """Scores over the paths present in both files; paths in only one are an error unless allowed."""
    predicted = read_assignments(str(assignments))
    truth = read_labels(labels)
    only_pred = [p for p in predicted if p not in truth]
    only_true = [p for p in truth if p not in predicted]
    if (only_pred or only_true) and not allow_missing:
        parts = []
        if only_pred:
            parts.append(f"{len(only_pred)} assigned paths have no label (e.g. {', '.join(only_pred[:3])})")
        if only_true:
            parts.append(f"{len(only_true)} labelled paths have no assignment (e.g. {', '.join(only_true[:3])})")
        raise InputError("; ".join(parts) + "; use --allow-missing to score the rest")
    common = [p for p in predicted if p in truth]
    if not common:
        raise InputError(f"no path of {assignments} appears in {labels}")
    return evaluate([truth[p] for p in common], [predicted[p] for p in common])
