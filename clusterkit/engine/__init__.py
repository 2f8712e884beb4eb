"""The shared training engine: a method supplies its model and phases, the engine does the rest.

See docs/engine.md for the API and the torchrun recipe. Names load on first use, so that a command
that only predicts (`assign` with a k-means model) does not import the training loop.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Batch": "clusterkit.engine.batches",
    "EpochContext": "clusterkit.engine.phase",
    "FitContext": "clusterkit.engine.context",
    "Phase": "clusterkit.engine.phase",
    "Trainer": "clusterkit.engine.trainer",
    "all_gather_with_grad": "clusterkit.engine.distributed",
    "is_main_process": "clusterkit.engine.distributed",
    "resolve_device": "clusterkit.engine.device",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(name)
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = list(_LAZY)
