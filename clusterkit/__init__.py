"""clusterkit: unsupervised image clustering.

    from clusterkit import load_images, get_method
    images = load_images("builtin:digits")
    model = get_method("spectral", k=10, seed=0).fit(images)
    labels = model.labels_

Imports are lazy so that `clusterkit --help` never loads torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clusterkit._version import __version__

if TYPE_CHECKING:
    from clusterkit.data import ImageSet, load_images
    from clusterkit.data.samples import FeatureSet
    from clusterkit.errors import InputError
    from clusterkit.methods.base import ClusterMethod
    from clusterkit.methods.factory import load_model
    from clusterkit.methods.registry import list_methods
    from clusterkit.workflows.assign import assign
    from clusterkit.workflows.embed import EmbedRequest, embed_source
    from clusterkit.workflows.evaluate import evaluate_files
    from clusterkit.workflows.export import export_run
    from clusterkit.workflows.fit import FitRequest, run_fit
    from clusterkit.workflows.report import build_report

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "ImageSet": "clusterkit.data",
    "FeatureSet": "clusterkit.data.samples",
    "load_images": "clusterkit.data",
    "InputError": "clusterkit.errors",  # what the library raises for bad input, as the CLI's one-line errors
    "load_model": "clusterkit.methods.factory",
    "list_methods": "clusterkit.methods.registry",
    "assign": "clusterkit.workflows.assign",
    "evaluate_files": "clusterkit.workflows.evaluate",
    "EmbedRequest": "clusterkit.workflows.embed",
    "embed_source": "clusterkit.workflows.embed",
    "export_run": "clusterkit.workflows.export",
    "build_report": "clusterkit.workflows.report",
    "FitRequest": "clusterkit.workflows.fit",
    "run_fit": "clusterkit.workflows.fit",
}


def get_method(name: str, **params: Any) -> ClusterMethod:
    """An unfitted method by registry name, e.g. `get_method("depict", k=10, seed=0)`."""
    from clusterkit.methods.factory import create_method

    return create_method(name, **params)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "EmbedRequest",
    "FeatureSet",
    "FitRequest",
    "ImageSet",
    "InputError",
    "__version__",
    "assign",
    "build_report",
    "embed_source",
    "evaluate_files",
    "export_run",
    "get_method",
    "list_methods",
    "load_images",
    "load_model",
    "run_fit",
]
