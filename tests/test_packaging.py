"""The wheel must ship every module: an editable install hides a package missing from pyproject."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_folder_is_a_listed_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: ROOT / path for name, path in config["package-dir"].items()}
    expected = set()
    for name, folder in folders.items():
        for module in folder.rglob("*.py"):
            parts = module.parent.relative_to(folder).parts
            expected.add(".".join((name, *parts)))
    assert expected == set(config["packages"])
