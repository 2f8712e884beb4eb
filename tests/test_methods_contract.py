"""The contract every registered method keeps (`clusterkit/methods/base.py`), checked on a small real
subset of the built-in digits with a tiny training budget per method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterkit.data.loading import load_images, resample
from clusterkit.errors import InputError
from clusterkit.methods.factory import create_method, load_model
from clusterkit.methods.registry import available_methods

N, K = 120, 4

# Tiny budgets that run in seconds; every registered method must have an entry here, so that a new
# method cannot slip past the contract (test_every_method_has_fast_options fails loudly otherwise).
FAST: dict[str, dict] = {
    "kmeans": {"n_init": 2},
    "spectral": {"n_init": 2},
    "gmm": {"n_init": 1},
    "depict": {
        "pretrain_epochs": 2,
        "init_epochs": 1,
        "epochs": 2,
        "feature_maps": 8,
        "init": "kmeans",
        "kmeans_n_init": 1,
    },
    "gatcluster": {
        "epochs": 2,
        "big_batch": 120,
        "batch_size": 32,
        "repeats": 1,
        "width": 8,
        "convs_per_block": 1,
        "flip": 0.0,
    },
    "gedi": {"iterations": 8, "batch_size": 32, "sgld_steps": 2, "buffer_size": 100, "hidden": 16},
    "iicc": {
        "epochs": 2,
        "batch_size": 32,
        "widths": (8, 8, 8),
        "hidden": 16,
        "token_dim": 16,
        "layers": 1,
        "heads": 2,
    },
    "sanet": {"subset_size": 100, "patches_per_unit": 1000, "units": 2, "restarts": 1},
}

METHODS = sorted(available_methods())


@pytest.fixture(scope="module")
def images():
    return load_images("builtin:digits").subset(np.arange(N))


def _options(name: str) -> dict:
    if name not in FAST:
        pytest.fail(
            f"method {name!r} is registered but has no FAST options in tests/test_methods_contract.py; "
            "add a tiny training budget for it there"
        )
    return FAST[name]


def _fit(name: str, images, seed: int = 0):
    torch.set_num_threads(1)
    model = create_method(name, k=K, seed=seed, device="cpu", **_options(name))
    return model, model.fit(images)


@pytest.fixture(scope="module", params=METHODS)
def fitted(request, images):
    """(name, model) fitted once per method; `fit`'s return value is checked in test_fit_returns_self."""
    model, returned = _fit(request.param, images)
    return request.param, model, returned


def test_every_method_has_fast_options():
    assert set(METHODS) == set(FAST), "FAST must name exactly the registered methods"


def test_fit_returns_self_and_sets_labels(fitted):
    _, model, returned = fitted
    assert returned is model
    labels = np.asarray(model.labels_)
    assert labels.shape == (N,)
    assert np.issubdtype(labels.dtype, np.integer)
    assert labels.min() >= 0 and labels.max() < K
    assert model.k_ == K and tuple(model.input_shape_) == (1, 8, 8)


def test_predict_proba_is_a_distribution_per_image(fitted, images):
    _, model, _ = fitted
    proba = model.predict_proba(images)
    assert proba.shape == (N, K)
    assert np.isfinite(proba).all()
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_fit_predict_equals_labels(fitted, images):
    name, model, _ = fitted
    again = create_method(name, k=K, seed=0, device="cpu", **_options(name))
    predicted = again.fit_predict(images)
    assert np.array_equal(predicted, again.labels_)
    # the same seed twice: identical training labels
    assert np.array_equal(again.labels_, model.labels_)


def test_save_and_load_model_reproduce_predictions(fitted, images, tmp_path):
    _, model, _ = fitted
    model.save(tmp_path / "model.ckpt")
    loaded = load_model(tmp_path / "model.ckpt", device="cpu")
    assert type(loaded) is type(model)
    assert loaded.k_ == model.k_ and tuple(loaded.input_shape_) == tuple(model.input_shape_)
    assert np.allclose(loaded.predict_proba(images), model.predict_proba(images), atol=1e-6)


def test_images_of_another_shape_are_refused(fitted, images):
    _, model, _ = fitted
    smaller = resample(images.subset(np.arange(10)), 6)
    assert smaller.sample_shape != images.sample_shape
    with pytest.raises(InputError, match="fitted on"):
        model.predict_proba(smaller)


def test_a_bare_array_is_refused(fitted, images):
    name, model, _ = fitted
    with pytest.raises(InputError, match="takes pixels"):
        model.predict_proba(images.pixels)
    with pytest.raises(InputError, match="takes pixels"):
        create_method(name, k=K, seed=0, device="cpu", **_options(name)).fit(images.pixels)


@pytest.mark.parametrize("name", METHODS)
def test_the_largest_seed_fits_end_to_end(name, images):
    """2**32 - 1, the top of the accepted seed range (scikit-learn's random_state), reaches every
    generator a method seeds (restarts, k-means, torch) without an error."""
    model, returned = _fit(name, images.subset(np.arange(60)), seed=2**32 - 1)
    assert returned is model and model.seed == 2**32 - 1
    assert np.asarray(model.labels_).shape == (60,)
