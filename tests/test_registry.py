"""The registries: the method map is complete and lazy, and the generic `Registry` refuses mistakes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import textwrap
import types

import pytest

import clusterkit.methods
from clusterkit.errors import InputError
from clusterkit.methods.registry import METHOD_MODULES
from clusterkit.registry import Registry

NOT_METHODS = {"clusterkit.methods.base", "clusterkit.methods.factory", "clusterkit.methods.registry"}


def _method_modules() -> list[str]:
    """Every module and package under clusterkit/methods/, sub-packages included, but the plumbing."""
    found = pkgutil.walk_packages(clusterkit.methods.__path__, prefix="clusterkit.methods.")
    return sorted(info.name for info in found if info.name not in NOT_METHODS)


# --- the method map ----------------------------------------------------------------------------------
def test_every_module_that_registers_a_method_is_in_the_map():
    from clusterkit.methods.base import ClusterMethod
    from clusterkit.methods.registry import METHODS

    modules = _method_modules()
    assert "clusterkit.methods.classical" in modules and "clusterkit.methods.sanet.blocks" in modules
    for name in modules:
        # A module registering a name the map does not declare fails here (Registry.register refuses it).
        importlib.import_module(name)
    registered = dict(METHODS._entries)
    assert set(registered) == set(METHOD_MODULES)
    registering = {cls.__module__ for cls in registered.values()}
    assert registering <= set(modules)
    assert registering == set(METHOD_MODULES.values())
    # and no concrete method class sits in a module without being registered
    for name in modules:
        for _, cls in inspect.getmembers(sys.modules[name], inspect.isclass):
            if issubclass(cls, ClusterMethod) and cls.__module__ == name and not inspect.isabstract(cls):
                assert cls in registered.values(), f"{name}.{cls.__name__} is a method but not registered"


@pytest.mark.parametrize("name", sorted(METHOD_MODULES))
def test_each_name_is_registered_by_the_module_the_map_names(name):
    from clusterkit.methods.registry import get_method_class, list_methods

    module = importlib.import_module(METHOD_MODULES[name])
    cls = get_method_class(name)
    assert cls.__module__ == METHOD_MODULES[name]
    assert getattr(module, cls.__name__) is cls
    assert cls.name == name
    assert name in list_methods()


def test_finding_kmeans_imports_no_deep_method_nor_torchvision():
    code = textwrap.dedent(
        """
        import sys
        from clusterkit.methods.registry import get_method_class
        cls = get_method_class("kmeans")
        assert cls.__module__ == "clusterkit.methods.classical", cls.__module__
        heavy = ["clusterkit.methods.gatcluster", "clusterkit.methods.depict", "clusterkit.methods.sanet",
                 "torchvision"]
        print(",".join(m for m in heavy if m in sys.modules) or "none")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "none"


# --- the generic Registry ----------------------------------------------------------------------------
def test_unknown_name_is_an_input_error_naming_the_choices():
    registry: Registry[type] = Registry("widget", {"b": "nowhere.b", "a": "nowhere.a"})
    assert registry.names() == ["a", "b"]  # sorted, and nothing imported: the modules do not exist
    with pytest.raises(InputError, match=r"unknown widget 'zzz'; choose one of: a, b"):
        registry.get("zzz")


def test_registering_an_undeclared_name_or_a_name_twice_is_refused():
    registry: Registry[type] = Registry("widget", {"a": "nowhere.a"})
    with pytest.raises(ValueError, match="not declared"):
        registry.register("other")(type("Other", (), {}))
    first = type("First", (), {})
    assert registry.register("a")(first) is first
    with pytest.raises(ValueError, match="twice"):
        registry.register("a")(type("Second", (), {}))
    assert registry.get("a") is first


def test_get_imports_only_the_module_that_registers_the_name(tmp_path, monkeypatch):
    registry: Registry[type] = Registry("widget", {"a": "ck_test_widgets_a", "b": "ck_test_widgets_b"})
    holder = types.ModuleType("ck_test_holder")
    holder.REGISTRY = registry
    monkeypatch.setitem(sys.modules, "ck_test_holder", holder)
    for name in "ab":
        (tmp_path / f"ck_test_widgets_{name}.py").write_text(
            f"from ck_test_holder import REGISTRY\n\n@REGISTRY.register({name!r})\nclass Widget{name.upper()}:\n    pass\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert registry.get("a").__name__ == "WidgetA"
        assert "ck_test_widgets_a" in sys.modules and "ck_test_widgets_b" not in sys.modules
        assert sorted(registry.all()) == ["a", "b"] and "ck_test_widgets_b" in sys.modules
    finally:
        sys.modules.pop("ck_test_widgets_a", None)
        sys.modules.pop("ck_test_widgets_b", None)
