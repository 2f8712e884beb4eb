"""Typed options, and checkpoints that load with weights_only=True and predict the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterkit import get_method, load_images
from clusterkit.checkpoint import load_model
from clusterkit.config import build_config, parse_set_options
from clusterkit.errors import InputError
from clusterkit.methods.classical import SpectralConfig


def test_set_values_are_parsed_as_yaml_scalars():
    assert parse_set_options(["a=1", "b=1e-3", "c=true", "d=pca", "e=null"]) == {
        "a": 1, "b": 0.001, "c": True, "d": "pca", "e": None,
    }
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_set_options(["novalue"])


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
    assert loaded.image_shape_ == (1, 8, 8) and loaded.k_ == 10
