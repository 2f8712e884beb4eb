"""The method registry: `--method NAME` and `clusterkit methods` read it, `@register` fills it.

Adding a method is one module (or package) and one line here; a test checks that every module under
`methods/` that registers a method is listed, and that each name lives where the map says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterkit.registry import Registry

if TYPE_CHECKING:
    from clusterkit.methods.base import ClusterMethod

METHOD_MODULES = {
    "kmeans": "clusterkit.methods.classical",
    "spectral": "clusterkit.methods.classical",
    "gmm": "clusterkit.methods.classical",
    "depict": "clusterkit.methods.depict",
    "gatcluster": "clusterkit.methods.gatcluster",
    "sanet": "clusterkit.methods.sanet",
    "gedi": "clusterkit.methods.gedi",
    "iicc": "clusterkit.methods.iicc",
}

METHODS: Registry[type[ClusterMethod]] = Registry("method", METHOD_MODULES)


def register(cls: type[ClusterMethod]) -> type[ClusterMethod]:
    """Class decorator: the method under its `name`."""
    return METHODS.register(cls.name)(cls)


def available_methods() -> dict[str, type[ClusterMethod]]:
    """Every method by name (imports every method module)."""
    return METHODS.all()


def get_method_class(name: str) -> type[ClusterMethod]:
    """One method's class, importing only its module."""
    return METHODS.get(name)


def list_methods() -> list[str]:
    """Every method's name, without importing any method module."""
    return METHODS.names()
