"""The shared training engine: a method supplies its model and phases, the engine does the rest.

See docs/engine.md for the API and the torchrun recipe.
"""

from .data import Batch
from .device import resolve_device
from .distributed import all_gather_with_grad, is_main_process
from .phase import EpochContext, Phase
from .trainer import Trainer

__all__ = ["Batch", "EpochContext", "Phase", "Trainer", "all_gather_with_grad", "is_main_process", "resolve_device"]
