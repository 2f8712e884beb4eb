"""clusterkit: unsupervised image clustering.

    from clusterkit import load_images, get_method
    images = load_images("builtin:digits")
    model = get_method("spectral", k=10, seed=0).fit(images)
    labels = model.predict(images)

Imports are lazy so that `clusterkit --help` never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .data import ImageSet, load_images
    from .errors import InputError
    from .methods.base import ClusterMethod


def get_method(name: str, **params: Any) -> "ClusterMethod":
    """An unfitted method by registry name, e.g. `get_method("depict", k=10, seed=0)`."""
    from .methods.registry import get_method_class

    return get_method_class(name)(**params)


def __getattr__(name: str) -> Any:
    if name in ("load_images", "ImageSet"):
        from . import data

        return getattr(data, name)
    if name == "InputError":  # what the library raises for bad input, as the CLI's one-line errors
        from .errors import InputError

        return InputError
    if name == "load_model":
        from .checkpoint import load_model

        return load_model
    raise AttributeError(name)


__all__ = ["ImageSet", "__version__", "get_method", "load_images", "load_model"]
