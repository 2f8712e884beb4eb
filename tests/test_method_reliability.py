"""Reliability of the methods on edge inputs (QA report 2026-12: D1, D4, D5, D9), on small real subsets
of the built-in digits."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from clusterkit import get_method, load_images
from clusterkit.errors import InputError
from clusterkit.methods import classical
from clusterkit.methods.registry import available_methods

METHODS = sorted(available_methods())


@pytest.fixture(scope="module")
def digits():
    return load_images("builtin:digits")


def _old_kmeans_proba(model, x: np.ndarray) -> np.ndarray:
    """k-means' soft assignment as it was computed before chunking: one (N, k, D) temporary."""
    d2 = ((x[:, None, :] - model.centers_[None]) ** 2).sum(-1)
    logits = -d2 / model.temperature_
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


# --- D1: k-means scores in chunks of rows, with bounded memory ----------------------------------


@pytest.mark.parametrize("chunk", [classical.PROBA_CHUNK, 1000])
def test_kmeans_chunked_proba_equals_the_one_temporary_formula(digits, monkeypatch, chunk):
    monkeypatch.setattr(classical, "PROBA_CHUNK", chunk)  # 1000 floats: one row of (10, 64) a chunk
    model = get_method("kmeans", k=10, seed=0, n_init=2).fit(digits)
    expected = _old_kmeans_proba(model, digits.flat())
    proba = model.predict_proba(digits)
    assert np.allclose(proba, expected, rtol=1e-6, atol=1e-7)
    assert np.array_equal(proba.argmax(axis=1), expected.argmax(axis=1))


def test_kmeans_predict_proba_memory_is_bounded():
    images = load_images("builtin:digits", image_size=32, channels=3)  # 1,797 x 3,072 values
    model = get_method("kmeans", k=20, seed=0, n_init=1).fit(images.subset(range(300)))
    tracemalloc.start()
    try:
        proba = model.predict_proba(images)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert proba.shape == (1797, 20)
    # The (N, k, D) float32 temporary alone was 1797 * 20 * 3072 * 4 bytes = 442 MB (twice: differences
    # and squares); the features are 22 MB and each chunk's temporaries at most 2 x 32 MB.
    assert peak < 160 * 2**20, f"predict_proba peaked at {peak / 2**20:.0f} MB"


# --- D4 and D9: k beyond the distinct images, counted on the pixels, for every method -----------


@pytest.mark.parametrize("method", ["kmeans", "spectral", "gmm"])
def test_k_beyond_the_distinct_images_is_refused_with_pca_features(digits, method):
    # 30 images, 10 distinct; their PCA projections differ in float noise (22 "distinct" rows before)
    images = digits.subset(list(range(10)) * 3)
    model = get_method(method, k=12, seed=0, device="cpu", features="pca")
    with pytest.raises(InputError, match=r"^--k 12 is larger than the number of distinct images \(10\)$"):
        model.fit(images)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_k_auto_tries_no_k_beyond_the_distinct_images_with_pca_features(digits, method):
    """--k auto bounds its candidates by the distinct images, counted on the pixels: 4 distinct
    images (each 5 times) allow k = 2..4, where their PCA noise made up to 19 candidates."""
    images = digits.subset(list(range(4)) * 5)
    model = get_method(method, k="auto", seed=0, device="cpu", features="pca", pca_components=10)
    model.fit(images)
    assert sorted(int(k) for k in model.k_selection_["scores"]) == [2, 3, 4]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_refuses_k_beyond_identical_images(digits, method):
    images = digits.subset([0] * 6)  # 6 byte-identical images
    model = get_method(method, k=2, seed=0, device="cpu")
    with pytest.raises(InputError, match=r"^--k 2 is larger than the number of distinct images \(1\)$"):
        model.fit(images)


@pytest.mark.parametrize("method", ["kmeans", "spectral", "gmm"])
def test_byte_identical_images_share_their_cluster_with_pca_features(digits, method):
    order = np.array(list(range(60)) + list(range(59, -1, -1)) + list(range(7)))  # each image 2 or 3 times
    images = digits.subset(order)
    model = get_method(method, k=4, seed=0, device="cpu", features="pca", pca_components=20, n_init=2)
    labels = model.fit(images).labels_
    proba = model.predict_proba(images)
    for image in range(60):
        copies = np.flatnonzero(order == image)
        assert len(set(labels[copies].tolist())) == 1
        for other in copies[1:]:
            assert np.array_equal(proba[other], proba[copies[0]])


# --- D5: the seed's range ------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [-1, -5, 2**32, 99999999999999999999, "1", 1.0, True, None])
def test_a_seed_out_of_range_is_one_input_error(method, seed):
    with pytest.raises(InputError, match=r"^--seed must be an integer in \[0, 4294967295\], got ") as caught:
        get_method(method, k=3, seed=seed, device="cpu")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("seed", [0, 2**32 - 1, np.int64(7)])
def test_the_seed_range_bounds_are_accepted(digits, seed):
    model = get_method("kmeans", k=3, seed=seed, n_init=1).fit(digits.subset(range(60)))
    assert isinstance(model.seed, int) and model.seed == int(seed)
