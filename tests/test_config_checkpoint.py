"""Typed options, and checkpoints that load with weights_only=True and predict the same."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clusterkit import get_method, load_images
from clusterkit.methods.factory import load_model
from clusterkit.config import MethodConfig, build_config, parse_set_options
from clusterkit.errors import InputError
from clusterkit.methods.classical import SpectralConfig
from clusterkit.methods.registry import available_methods


def test_set_values_are_parsed_as_yaml_scalars():
    assert parse_set_options(["a=1", "b=1e-3", "c=true", "d=pca", "e=null"]) == {
        "a": 1, "b": 0.001, "c": True, "d": "pca", "e": None,
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
