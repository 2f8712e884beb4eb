"""`assign` as a library verb: a saved model's clusters for the samples of a SOURCE."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from clusterkit.data import load_like
from clusterkit.data.samples import Samples
from clusterkit.errors import InputError
from clusterkit.io import atomic_write_text
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.factory import load_model
from clusterkit.outputs.assignments import FORMATS, Format, sample_columns, write_assignments
from clusterkit.workflows.embed import EmbedRequest, embed_source


@dataclass(frozen=True)
class Assignment:
    """The soft assignment of each sample of a source, rows in input order."""

    paths: list[str]
    proba: np.ndarray
    skipped: list[tuple[str, str]]
    energy: np.ndarray | None = None  # E(x) of a generative model (GEDI): high = unlike the training data
    columns: dict[str, Sequence] = field(default_factory=dict)  # the source's own: `kind` of a volume source

    def table_columns(self) -> dict[str, Sequence]:
        """The columns after the confidence: the source's, then the model's energy."""
        return self.columns | ({"energy": self.energy} if self.energy is not None else {})

    @property
    def clusters(self) -> np.ndarray:
        return self.proba.argmax(axis=1)


def assign(
    source: str,
    model: str | Path | ClusterMethod,
    device: str = "auto",
    batch_size: int | None = None,
    nul_separated: bool = False,
    weights: str | None = None,
    cache: Path | None = None,
    use_cache: bool = True,
    energy: bool = False,
) -> Assignment:
    """Load `source` as the model was trained (sample kind, size, channels; for features, the same
    backbone, refused when its weights or preprocessing differ) and predict it; `model` is a fitted
    method, a run folder or a model.ckpt. `weights` finds the backbone's weights where they moved.
    `energy` adds each sample's energy under a generative model, for out-of-distribution screening."""
    fitted = model if isinstance(model, ClusterMethod) else load_model(model, device=device, batch_size=batch_size)
    score_energy = getattr(fitted, "energy", None)
    if energy and score_energy is None:
        raise InputError(f"--energy needs a generative model (--method gedi); this model is {fitted.name}")
    samples = load_samples(
        fitted,
        source,
        nul_separated,
        weights=weights,
        cache=cache,
        use_cache=use_cache,
        device=device,
        batch_size=batch_size,
    )
    return Assignment(
        samples.paths,
        fitted.predict_proba(samples),
        samples.skipped,
        energy=score_energy(samples) if energy else None,
        columns=sample_columns(samples),
    )


def load_samples(
    fitted: ClusterMethod,
    source: str,
    nul_separated: bool = False,
    stdin: TextIO | None = None,
    weights: str | None = None,
    cache: Path | None = None,
    use_cache: bool = True,
    device: str = "auto",
    batch_size: int | None = None,
) -> Samples:
    """The samples of `source` as `fitted` takes them: pixels of its kind and shape, or the features
    of its backbone (through the feature cache, `batch_size` images through the backbone at once)."""
    if fitted.backbone_ is None:
        if weights is not None:
            raise InputError(f"--weights: this {fitted.name} model clusters pixels, not a backbone's features")
        return load_like(source, fitted.input_kind_, fitted.input_shape_, nul_separated=nul_separated, stdin=stdin)
    recorded = fitted.backbone_
    request = EmbedRequest(
        source,
        recorded["name"],
        weights=weights or recorded.get("weights"),
        cache=cache,
        use_cache=use_cache,
        device=device,
        batch_size=batch_size,
        nul_separated=nul_separated,
        stdin=stdin,
    )
    return embed_source(request, fitted=recorded)


def check_output(output: str, fmt: str) -> None:
    """Refuse, before any work, an output that cannot be written: the rest is atomic_write's."""
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not output:
        raise InputError("--output is empty: give a file name, or - for stdout")
    if output == "-" and sys.stdout is None:  # the command was started with stdout closed (`>&-`)
        raise InputError("standard output is closed: give --output FILE, or leave stdout open")
    if output != "-" and Path(output).is_dir():
        raise InputError(f"--output {output} is a folder; give a file name")


def write_assignment(result: Assignment, output: str = "-", fmt: Format = "csv", probs: bool = False) -> None:
    """The table to stdout (`output="-"`) or atomically to a file."""
    check_output(output, fmt)
    columns = result.table_columns()
    if output == "-":
        if hasattr(sys.stdout, "reconfigure"):  # file names that are not UTF-8 go out as their own bytes
            sys.stdout.reconfigure(errors="surrogateescape")
        write_assignments(sys.stdout, result.paths, result.proba, fmt=fmt, probs=probs, columns=columns)
        return
    buffer = io.StringIO()
    write_assignments(buffer, result.paths, result.proba, fmt=fmt, probs=probs, columns=columns)
    atomic_write_text(output, buffer.getvalue())
