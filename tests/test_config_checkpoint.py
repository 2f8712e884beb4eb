"""Typed options, and checkpoints that load with weights_only=True and predict the same."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clusterkit import get_method, load_images
from clusterkit.config import MethodConfig, build_config, parse_set_options
from clusterkit.errors import InputError
from clusterkit.methods.classical import SpectralConfig
from clusterkit.methods.factory import load_model
from clusterkit.methods.registry import available_methods


def test_set_values_are_parsed_as_yaml_scalars():
    assert parse_set_options(["a=1", "b=1e-3", "c=true", "d=pca", "e=null"]) == {
        "a": 1,
        "b": 0.001,
        "c": True,
        "d": "pca",
        "e": None,
    }
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_set_options(["novalue"])


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_method_options_do_not_shadow_the_preprocessing_options(name):
    """A method field named like a shared one (DEPICT once had `channels` = conv width) would change
    how every image is decoded."""
    shared = {f.name: f.default for f in dataclasses.fields(MethodConfig)}
    own = {f.name: f.default for f in dataclasses.fields(available_methods()[name].Config)}
    assert {key: own[key] for key in shared} == shared


def test_values_are_coerced_and_checked():
    config = build_config(SpectralConfig, {"n_neighbors": 15, "image_size": None}, "spectral")
    assert config.n_neighbors == 15
    with pytest.raises(InputError, match="integer"):
        build_config(SpectralConfig, {"n_neighbors": "many"}, "spectral")
    with pytest.raises(InputError, match="one of"):
        build_config(SpectralConfig, {"features": "wavelets"}, "spectral")


@pytest.mark.parametrize("method", ["kmeans", "spectral", "gmm"])
def test_checkpoint_round_trip(tmp_path, method):
    images = load_images("builtin:digits")
    model = get_method(method, k=10, seed=0, features="pca", pca_components=20).fit(images)
    path = tmp_path / "model.ckpt"
    model.save(path)
    torch.load(path, weights_only=True)  # plain tensors and data only
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict_proba(images), model.predict_proba(images), atol=1e-6)
    assert loaded.input_shape_ == (1, 8, 8) and loaded.k_ == 10


@pytest.mark.parametrize("method", available_methods())
def test_an_unfitted_model_says_so(tmp_path, method):
    model = get_method(method, k=3, device="cpu")
    images = load_images("builtin:digits").subset(range(20))
    with pytest.raises(InputError, match="not fitted"):
        model.predict(images)
    with pytest.raises(InputError, match="not fitted"):
        model.save(tmp_path / "model.ckpt")


def test_a_fit_that_fails_half_way_leaves_an_unfitted_model(monkeypatch):
    model = get_method("spectral", k=3, device="cpu")
    images = load_images("builtin:digits").subset(range(60))
    model.fit(images)

    def interrupted(images, context):
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "_fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(images)
    with pytest.raises(InputError, match="not fitted"):
        model.predict(images)


def test_predict_on_a_bare_array_says_what_it_takes():
    from clusterkit import InputError as exported

    digits = load_images("builtin:digits").subset(range(60))
    model = get_method("kmeans", k=3, device="cpu").fit(digits)
    with pytest.raises(exported, match="takes pixels samples .clusterkit.load_images., got ndarray"):
        model.predict(digits.pixels)


@pytest.mark.parametrize("method", ["kmeans", "spectral", "gmm"])
def test_classical_models_refuse_images_of_another_shape(method):
    from clusterkit.data.loading import resample

    digits = load_images("builtin:digits").subset(range(60))
    model = get_method(method, k=3, device="cpu").fit(digits)
    with pytest.raises(InputError, match="fitted on 1x8x8"):
        model.predict(resample(digits, (4, 16)))  # the same pixel count, another shape


# --- declared options: one checker, one message style, help for every field ----------------------


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        ("depict", {"lr": -1.0}, r"^depict: option lr must be > 0, got -1\.0$"),
        ("depict", {"holdout": 0.5}, r"^depict: option holdout must be in \[0, 0\.5\), got 0\.5$"),
        ("sanet", {"patch_size": 4}, r"^sanet: option patch_size must be odd, got 4$"),
        (
            "sanet",
            {"subset_size": 10},
            r"^sanet: option subset_size \(10\) must be at least 2 x n_neighbors \(2 x 10 = 20\)$",
        ),
        ("sanet", {"working_size": 2}, r"^sanet: option working_size \(2\) must be 'auto' or at least grid \(4\)$"),
        (
            "gatcluster",
            {"batch_size": 64, "big_batch": 32},
            r"^gatcluster: option batch_size \(64\) must not exceed big_batch \(32\)$",
        ),
        ("gatcluster", {"hue": 0.6}, r"^gatcluster: option hue must be in \[0, 0\.5\], got 0\.6$"),
        ("kmeans", {"channels": 2}, r"^kmeans: option channels must be one of 1, 3 or null, got 2$"),
        (
            "spectral",
            {"features": "wavelets"},
            r"^spectral: option features must be one of \['pixels', 'pca'\], got 'wavelets'$",
        ),
        ("spectral", {"n_neighbors": "many"}, r"^spectral: option n_neighbors must be an integer, got 'many'$"),
    ],
)
def test_options_are_checked_in_one_message_style(method, overrides, message):
    with pytest.raises(InputError, match=message):
        build_config(available_methods()[method].Config, overrides, method)


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        ("kmeans", {"n_init": 0}, "option n_init must be >= 1"),
        ("kmeans", {"pca_components": -3}, "option pca_components must be >= 1"),
        ("gmm", {"k_max": 1}, "option k_max must be >= 2"),
        ("spectral", {"n_neighbors": 0}, "option n_neighbors must be >= 1"),
        ("spectral", {"vote_neighbors": 0}, "option vote_neighbors must be >= 1"),
        ("depict", {"dropout": 1.0}, r"option dropout must be in \[0, 1\)"),
        ("depict", {"batch_size": 0}, "option batch_size must be >= 1"),
        ("depict", {"pretrain_patience": 0}, "option pretrain_patience must be >= 1"),
        ("gatcluster", {"grad_clip": -1.0}, "option grad_clip must be >= 0"),
        ("gatcluster", {"flip": 1.5}, r"option flip must be in \[0, 1\]"),
        ("gatcluster", {"weight_entropy": -1.0}, "option weight_entropy must be >= 0"),
        ("gatcluster", {"scale_min": 1.3}, "option scale_min .1.3. must not exceed scale_max .1.2."),
        ("sanet", {"n_neighbors": 1}, "option n_neighbors must be >= 2"),
        ("sanet", {"k_max": 1}, "option k_max must be >= 2"),
        ("sanet", {"keep_fraction": 0.0}, r"option keep_fraction must be in \(0, 1\]"),
        ("sanet", {"ridge": 0.0}, "option ridge must be > 0"),
        ("sanet", {"patches_per_unit": 39}, "option patches_per_unit .39. must be at least 4 x n_neighbors"),
        ("sanet", {"image_size": 0}, "option image_size must be >= 1"),
    ],
)
def test_every_range_is_refused(method, overrides, message):
    with pytest.raises(InputError, match=f"^{method}: {message}"):
        build_config(available_methods()[method].Config, overrides, method)


def test_boundary_values_and_nulls_are_accepted():
    from clusterkit.methods.depict import DepictConfig
    from clusterkit.methods.sanet import SANetConfig

    assert build_config(DepictConfig, {"epochs": 0, "holdout": 0.0, "dropout": 0.0}, "depict").epochs == 0
    assert (
        build_config(SANetConfig, {"working_size": 4, "keep_fraction": 1.0, "image_size": None}, "sanet").working_size
        == 4
    )
    assert build_config(SANetConfig, {"working_size": "auto", "channels": 3}, "sanet").channels == 3


@pytest.mark.parametrize("name", sorted(available_methods()))
def test_every_option_has_help_and_the_defaults_pass_their_checks(name):
    from clusterkit.config import describe_options

    config_cls = available_methods()[name].Config
    options = describe_options(config_cls)
    assert [o["name"] for o in options] == [f.name for f in dataclasses.fields(config_cls)]
    for entry in options:
        assert entry["help"].strip() and "\n" not in entry["help"], (name, entry["name"])
    build_config(config_cls, {}, name)


def test_describe_options_gives_type_default_constraint_and_help():
    from clusterkit.config import describe_options
    from clusterkit.methods.depict import DepictConfig
    from clusterkit.methods.sanet import SANetConfig

    holdout = next(o for o in describe_options(DepictConfig) if o["name"] == "holdout")
    assert holdout["type"] == "float" and holdout["default"] == 0.1 and holdout["constraint"] == "in [0, 0.5)"
    assert "early" in holdout["help"]
    sanet = {o["name"]: o for o in describe_options(SANetConfig)}
    assert sanet["patch_size"]["constraint"] == ">= 1, odd"
    assert sanet["working_size"]["constraint"] == "'auto' or >= grid"
    assert sanet["image_size"]["constraint"] == ">= 1 or null"


def test_methods_name_lists_every_option_with_its_help(cli):
    from clusterkit.config import describe_options
    from clusterkit.methods.depict import DepictConfig

    result = cli("methods", "depict")
    assert result.code == 0, result.err
    help_text = next(o["help"] for o in describe_options(DepictConfig) if o["name"] == "pretrain_epochs")
    line = next(line for line in result.out.splitlines() if line.split() and line.split()[0] == "pretrain_epochs")
    assert "600" in line and ">= 0" in line and help_text in line


def test_methods_name_json_holds_every_field(cli):
    import json

    from clusterkit.methods.sanet import SANetConfig

    result = cli("methods", "sanet", "--json")
    assert result.code == 0, result.err
    described = json.loads(result.out)
    assert described["name"] == "sanet" and described["description"]
    assert [o["name"] for o in described["options"]] == [f.name for f in dataclasses.fields(SANetConfig)]
    assert all({"name", "type", "default", "constraint", "help"} == set(o) for o in described["options"])


def test_methods_with_an_unknown_name_is_one_line_and_exit_2(cli):
    result = cli("methods", "nonsense")
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "unknown method 'nonsense'" in lines[0], result.err


# --- every bounded option is refused out of range through create_method (QA D6) -----------------

# Numeric options bounded only by a cross-field rule (`Config.rules`), with a value that breaks it.
BOUNDED_BY_A_RULE_ONLY: dict[tuple[str, str], object] = {
    ("sanet", "subset_size"): 1,
    ("sanet", "patches_per_unit"): 1,
    ("sanet", "working_size"): 2,
}
# Numeric options with no bound at all, each a decision (none today): a new numeric option without a
# declared range fails test_every_numeric_option_declares_its_range until it is bounded or listed here.
UNBOUNDED: dict[tuple[str, str], str] = {}


def _numeric_type(annotation) -> type | None:
    import types
    import typing

    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if union else (annotation,)
    return next((arg for arg in args if arg in (int, float)), None)


def _numeric_options() -> list[tuple[str, str, type, dict]]:
    import typing

    found = []
    for name, cls in sorted(available_methods().items()):
        hints = typing.get_type_hints(cls.Config)
        for f in dataclasses.fields(cls.Config):
            kind = _numeric_type(hints[f.name])
            if kind is not None:
                found.append((name, f.name, kind, dict(f.metadata)))
    return found


def _bad_values(kind: type, meta: dict) -> list:
    """Values just outside each declared bound of one option."""
    bad = []
    if meta.get("low") is not None:
        low = meta["low"]
        bad.append(low if meta["low_open"] else (low - 1 if kind is int else low - 0.5))
    if meta.get("high") is not None:
        high = meta["high"]
        bad.append(high if meta["high_open"] else (high + 1 if kind is int else high + 0.5))
    if meta.get("odd"):
        bad.append(max(2, int(meta.get("low") or 0) + 1) // 2 * 2)  # an even value above the low bound
    if meta.get("choices") is not None:
        bad.append(max(meta["choices"]) + 1)
    return bad


def _declares_a_range(meta: dict) -> bool:
    return any(meta.get(key) is not None for key in ("low", "high", "choices")) or bool(meta.get("odd"))


OUT_OF_RANGE = [
    pytest.param(name, option, value, id=f"{name}-{option}={value}")
    for name, option, kind, meta in _numeric_options()
    for value in _bad_values(kind, meta)
] + [
    pytest.param(name, option, value, id=f"{name}-{option}={value}")
    for (name, option), value in BOUNDED_BY_A_RULE_ONLY.items()
]


@pytest.mark.parametrize("name, option, value", OUT_OF_RANGE)
def test_every_declared_bound_is_refused_through_create_method(name, option, value):
    from clusterkit.methods.factory import create_method

    with pytest.raises(InputError, match=rf"^{name}: option {option} ") as caught:
        create_method(name, **{option: value})
    assert "\n" not in str(caught.value)


def test_every_numeric_option_declares_its_range():
    undeclared = {
        (name, option)
        for name, option, _, meta in _numeric_options()
        if not _declares_a_range(meta) and (name, option) not in BOUNDED_BY_A_RULE_ONLY
    }
    assert undeclared <= set(UNBOUNDED), (
        f"numeric options without a declared range: {sorted(undeclared - set(UNBOUNDED))}; give them "
        "option(..., low=, high=) or list them in UNBOUNDED with the reason"
    )
    for name, option in BOUNDED_BY_A_RULE_ONLY:
        assert any(rule.left == option for rule in available_methods()[name].Config.rules), (name, option)
    assert len(OUT_OF_RANGE) > 60  # the parametrization did find the options


# --- a checkpoint whose arrays disagree with its k or input shape is damaged (QA D18) ------------


def _edited_checkpoint(tmp_path, method, edit, **options):
    images = load_images("builtin:digits").subset(range(80))
    get_method(method, k=4, seed=0, device="cpu", **options).fit(images).save(tmp_path / "model.ckpt")
    payload = torch.load(tmp_path / "model.ckpt", weights_only=True)
    edit(payload)
    torch.save(payload, tmp_path / "edited.ckpt")
    return tmp_path / "edited.ckpt"


def _set_k(k):
    return lambda payload: payload.update(k=k)


def _set_shape(shape):
    return lambda payload: payload["input"].update(shape=list(shape))


@pytest.mark.parametrize(
    "method, options, edit",
    [
        ("kmeans", {}, _set_k(3)),
        ("kmeans", {}, _set_shape((3, 8, 8))),
        ("kmeans", {}, lambda p: (_set_k(3)(p), _set_shape((3, 8, 8))(p))),
        ("kmeans", {}, _set_k(-1)),
        ("kmeans", {"features": "pca", "pca_components": 10}, _set_shape((1, 4, 4))),
        ("spectral", {}, _set_k(2)),
        ("spectral", {}, _set_shape((3, 8, 8))),
        ("gmm", {}, _set_k(3)),
        ("gmm", {}, _set_shape((1, 8, 4))),
        ("sanet", {"working_size": 8, "restarts": 1, "subset_size": 80, "patches_per_unit": 1000}, _set_k(2)),
    ],
)
def test_a_checkpoint_that_disagrees_with_its_k_or_shape_is_damaged(tmp_path, method, options, edit):
    path = _edited_checkpoint(tmp_path, method, edit, **options)
    with pytest.raises(InputError, match="damaged") as caught:
        load_model(path)
    assert "\n" not in str(caught.value)
