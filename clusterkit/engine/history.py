"""RUN/history.jsonl: one JSON object per epoch (phase, epoch, loss terms, speed and, when ground
truth is known, ACC/NMI/ARI), appended as training goes so a crashed run keeps its curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clusterkit.io import atomic_write_text
from clusterkit.outputs.run import HISTORY_NAME


class History:
    def __init__(self, run_dir: Path | None, enabled: bool) -> None:
        self.path = run_dir / HISTORY_NAME if run_dir is not None and enabled else None
        self.lines = 0

    def start(self, keep: int) -> None:
        """Keep the first `keep` records (those the resumed checkpoint has seen), drop the rest."""
        self.lines = keep
        if self.path is None:
            return
        old = self.path.read_text(encoding="utf-8").splitlines(keepends=True) if self.path.exists() else []
        atomic_write_text(self.path, "".join(old[:keep]))

    def append(self, record: dict[str, Any]) -> None:
        self.lines += 1
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
