"""Named presets (`fit --preset NAME`): every declared preset builds a valid config of its method, the
layering (defaults < preset < --config < flags < --set), config.yaml recording the preset so that
`fit --config` repeats the run, the one-line error for an unknown name, and `clusterkit methods`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_cli_errors import assert_one_line_error

from clusterkit.config import MethodConfig, build_config
from clusterkit.errors import InputError
from clusterkit.methods.classical import ClassicalConfig
from clusterkit.methods.registry import available_methods, get_method_class
from clusterkit.workflows.fit import FitRequest, resolve_settings

DECLARED = [(name, preset) for name, cls in available_methods().items() for preset in cls.Config.presets]

# A preset for k-means, so that the layering is checked on fits that take a second.
TEST_PRESETS = {"few": {"n_init": 2, "features": "pca", "pca_components": 12}, "other": {"n_init": 3}}


@pytest.fixture
def kmeans_presets(monkeypatch):
    monkeypatch.setattr(ClassicalConfig, "presets", TEST_PRESETS)


def _config(request: FitRequest) -> MethodConfig:
    settings = resolve_settings(request)
    return build_config(get_method_class(settings.method).Config, settings.options, settings.method)


# --- declared presets -------------------------------------------------------------------------
def test_depict_and_gatcluster_declare_the_paper_schedule():
    assert ("depict", "paper") in DECLARED and ("gatcluster", "paper") in DECLARED


@pytest.mark.parametrize(("method", "preset"), DECLARED)
def test_every_declared_preset_builds_a_valid_config(method, preset):
    config_cls = get_method_class(method).Config
    values = config_cls.presets[preset]
    config = build_config(config_cls, values, method)  # unknown keys, wrong types, ranges, rules: InputError
    assert {key: getattr(config, key) for key in values} == values


def test_the_paper_schedules_are_the_official_ones():
    depict = get_method_class("depict").Config.presets["paper"]
    assert depict["pretrain_epochs"] == 4001 and depict["epochs"] == 4000
    assert depict["lr"] == depict["cluster_lr"] == 1e-4
    gatcluster = get_method_class("gatcluster").Config.presets["paper"]
    assert (gatcluster["epochs"], gatcluster["repeats"], gatcluster["width"]) == (6000, 8, 64)
    assert gatcluster["feature_dim"] == 10 and gatcluster["max_image_size"] == 96


# --- layering ---------------------------------------------------------------------------------
def test_the_preset_lies_under_the_config_file_the_flags_and_set(tmp_path):
    request = FitRequest(source="builtin:digits", method="gatcluster", k=10, preset="paper")
    assert _config(request).epochs == 6000 and _config(request).repeats == 8
    config_file = tmp_path / "options.yaml"
    config_file.write_text("epochs: 20\nrepeats: 2\n")
    request.config_file = config_file
    config = _config(request)
    assert (config.epochs, config.repeats, config.width) == (20, 2, 64)  # width: still the preset's
    request.epochs = 30
    assert _config(request).epochs == 30
    request.overrides = ["epochs=40", "width=16"]
    config = _config(request)
    assert (config.epochs, config.repeats, config.width, config.feature_dim) == (40, 2, 16, 10)


def test_the_preset_can_be_named_in_the_config_file_or_by_set(tmp_path, kmeans_presets):
    config_file = tmp_path / "options.yaml"
    config_file.write_text("method: kmeans\nk: 3\npreset: few\n")
    assert _config(FitRequest(source="builtin:digits", config_file=config_file)).n_init == 2
    flag = FitRequest(source="builtin:digits", config_file=config_file, preset="other")
    assert _config(flag).n_init == 3  # --preset names it over the file's preset
    assert _config(flag).features == "pixels"
    by_set = FitRequest(source="builtin:digits", config_file=config_file, overrides=["preset=other"])
    assert resolve_settings(by_set).preset == "other"


def test_no_preset_is_the_defaults():
    settings = resolve_settings(FitRequest(source="builtin:digits", method="gatcluster", k=10))
    assert settings.preset is None and settings.options == {}


def test_resume_refuses_another_preset(tmp_path, kmeans_presets):
    (tmp_path / "config.yaml").write_text("method: kmeans\nk: 3\nseed: 0\nn_init: 10\n")
    request = FitRequest(source="builtin:digits", out=tmp_path, resume=True, preset="few")
    with pytest.raises(InputError, match="was fit with no preset; leave out --preset"):
        resolve_settings(request)


# --- config.yaml ------------------------------------------------------------------------------
def test_config_yaml_records_the_preset_and_repeats_the_run(cli, tmp_path, kmeans_presets):
    first = tmp_path / "first"
    result = cli(
        "fit",
        "builtin:digits",
        "--method",
        "kmeans",
        "--k",
        "10",
        "--preset",
        "few",
        "--set",
        "pca_components=8",
        "--out",
        first,
        "--quiet",
    )
    assert result.code == 0, result.err
    recorded = yaml.safe_load((first / "config.yaml").read_text())
    assert recorded["preset"] == "few"
    assert (recorded["n_init"], recorded["features"], recorded["pca_components"]) == (2, "pca", 8)

    again = tmp_path / "again"
    result = cli("fit", "builtin:digits", "--config", first / "config.yaml", "--out", again, "--quiet")
    assert result.code == 0, result.err  # `preset` is no unknown option
    assert (again / "config.yaml").read_text() == (first / "config.yaml").read_text()
    assert (again / "assignments.csv").read_text() == (first / "assignments.csv").read_text()


def test_a_paper_run_records_the_official_values(cli, tmp_path, digits_dir):
    """A real preset on 64 digits, with the budget cut by --set: what was not cut is the paper's."""
    listing = tmp_path / "images.txt"
    listing.write_text("".join(f"{path}\n" for path in sorted((digits_dir / "images").glob("*.png"))[:64]))
    out = tmp_path / "run"
    result = cli(
        "fit",
        listing,
        "--method",
        "gatcluster",
        "--k",
        "3",
        "--preset",
        "paper",
        "--device",
        "cpu",
        "--set",
        "epochs=1",
        "--set",
        "repeats=1",
        "--set",
        "width=4",
        "--out",
        out,
        "--quiet",
    )
    assert result.code == 0, result.err
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["preset"] == "paper"
    assert (recorded["epochs"], recorded["repeats"], recorded["width"]) == (1, 1, 4)
    assert (recorded["feature_dim"], recorded["grad_clip"], recorded["max_image_size"]) == (10, 0.0, 96)
    assert list(recorded)[:4] == ["method", "k", "seed", "preset"]


# --- errors and listing -----------------------------------------------------------------------
def test_an_unknown_preset_is_one_line_listing_the_methods_presets(cli, tmp_path):
    out = tmp_path / "run"
    result = cli("fit", "builtin:digits", "--method", "depict", "--k", "10", "--preset", "fast", "--out", out)
    assert_one_line_error(result, "unknown preset 'fast' for depict", "its presets: paper")
    assert not out.exists()


def test_a_method_without_presets_says_it_has_none(cli, tmp_path):
    result = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "10", "--preset", "paper")
    assert_one_line_error(result, "unknown preset 'paper'", "kmeans has no presets")


def test_methods_lists_the_presets(cli):
    result = cli("methods")
    assert result.code == 0, result.err
    assert "--preset paper: epochs=6000" in result.out and "--preset paper: epochs=4000" in result.out
    rows = {row["name"]: row for row in json.loads(cli("methods", "--json").out)}
    assert rows["gatcluster"]["presets"]["paper"]["repeats"] == 8 and rows["kmeans"]["presets"] == {}
    described = cli("methods", "depict")
    assert "presets (--preset NAME" in described.out and "paper: epochs=4000" in described.out
    assert json.loads(cli("methods", "depict", "--json").out)["presets"]["paper"]["cluster_lr"] == 1e-4
    assert "presets: none" in cli("methods", "kmeans").out


def test_the_docs_name_the_option():
    usage = (Path(__file__).parents[1] / "docs" / "usage.md").read_text(encoding="utf-8")
    assert "### Presets" in usage and "--preset paper" in usage
