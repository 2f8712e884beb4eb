"""One generic registry: name -> entry, filled by a decorator, looked up lazily (as timm's
`_registry.py` keeps a model -> module map), so that finding one entry imports only its module.

Methods use it today (`methods/registry.py`); backbones and built-in data sets can use the same.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from clusterkit.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries registered under names that `modules` declares up front, each with the module that
    registers it. Declaring them up front is what lets `get` import one module instead of all, and
    `register` refuses a name the map does not declare, so the map cannot fall out of date."""

    def __init__(self, kind: str, modules: Mapping[str, str]) -> None:
        self.kind = kind
        self.modules = dict(modules)
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if name not in self.modules:
                raise ValueError(f"{self.kind} {name!r} is not declared in the registry's module map")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> list[str]:
        """Every declared name, sorted, without importing anything."""
        return sorted(self.modules)

    def get(self, name: str) -> T:
        """The entry `name`, importing only the module that registers it."""
        if name not in self.modules:
            raise InputError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        if name not in self._entries:
            importlib.import_module(self.modules[name])
        return self._entries[name]

    def all(self) -> dict[str, T]:
        """Every entry by name (imports every module)."""
        return {name: self.get(name) for name in self.names()}
