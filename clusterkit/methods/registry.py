"""Name -> method class, filled by the `@register` decorator (as timm registers models)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from .base import ClusterMethod

_REGISTRY: dict[str, type["ClusterMethod"]] = {}

# Modules that register methods on import; listed once so `methods` and `--method` see them all.
_METHOD_MODULES = ("classical", "depict", "sanet", "gatcluster")


def register(cls: type["ClusterMethod"]) -> type["ClusterMethod"]:
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    for module in _METHOD_MODULES:
        importlib.import_module(f"{__package__}.{module}")


def available_methods() -> dict[str, type["ClusterMethod"]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method_class(name: str) -> type["ClusterMethod"]:
    methods = available_methods()
    if name not in methods:
        raise InputError(f"unknown method {name!r}; choose one of: {', '.join(methods)}")
    return methods[name]
