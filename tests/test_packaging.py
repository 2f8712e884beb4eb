"""The wheel must ship every module: an editable install hides a package that discovery misses."""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_folder_is_a_discovered_package() -> None:
    """A folder of modules without an `__init__.py` is left out of the wheel by package discovery."""
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "clusterkit").rglob("*.py")}
    assert folders == set(find_packages(str(ROOT), include=["clusterkit*"]))
