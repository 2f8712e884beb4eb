"""What a fit needs besides its samples; it lives in the engine because the Trainer reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FitContext:
    """Where to keep checkpoints (None: keep none) and whether to resume from them."""

    run_dir: Path | None = None
    resume: bool = False
