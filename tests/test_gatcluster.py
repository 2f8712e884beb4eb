"""GATCluster: its network, relation labels and big batches on hand-made cases, and short fits on the
built-in digits. Its shared building blocks are tested in test_nn.py, test_losses.py and test_augment.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterkit.data.loading import load_images
from clusterkit.engine.optim import ClippedAdam
from clusterkit.methods.base import ClusterMethod
from clusterkit.methods.factory import load_model
from clusterkit.methods.gatcluster import (
    GATCluster,
    GATClusterConfig,
    GATClusterNet,
    big_batch_indices,
    relation_labels,
)
from clusterkit.metrics import cluster_acc

# A few outer iterations of a narrow network: enough to beat chance clearly, in seconds. No flips:
# a mirrored digit is another glyph, so flip invariance only slows down such a short run.
FAST = {"epochs": 4, "big_batch": 1000, "repeats": 4, "width": 16, "convs_per_block": 2, "flip": 0.0}


@pytest.fixture(scope="module")
def digits():
    return load_images("builtin:digits")


@pytest.fixture(scope="module")
def fitted(digits):
    return GATCluster(k=10, seed=0, device="cpu", **FAST).fit(digits)


# --- network ------------------------------------------------------------------------------------------
def test_network_maps_and_distributions():
    net = GATClusterNet(1, (8, 8), 10, GATClusterConfig(width=8, convs_per_block=1)).eval()
    probs, probs_att = net(torch.rand(5, 1, 8, 8))
    assert probs.shape == probs_att.shape == (5, 10)
    assert torch.allclose(probs.sum(1), torch.ones(5)) and torch.allclose(probs_att.sum(1), torch.ones(5))
    mask, theta = net.attention_maps(torch.rand(5, 1, 8, 8))
    assert mask.shape == (5, 4, 4) and theta.shape == (5, 3)


# --- targets, big batches, optimizer ------------------------------------------------------------------
def test_relation_labels_fall_back_when_a_cluster_is_nearly_empty():
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    balanced = np.repeat(centres, 20, axis=0) + 0.01 * rng.standard_normal((60, 3))
    labels = relation_labels(balanced, k=3, restarts=2, min_ratio=0.1, seed=0)
    assert labels is not None and sorted(np.bincount(labels)) == [20, 20, 20]
    lopsided = np.concatenate([balanced[:58], balanced[40:41] + 5])  # a cluster of 1 < 0.1 * 59 / 3
    assert relation_labels(lopsided, k=3, restarts=2, min_ratio=0.1, seed=0) is None


def test_big_batches_partition_each_pass_over_the_data():
    first_pass = [big_batch_indices(1797, 1000, epoch, seed=3) for epoch in range(2)]
    assert [len(b) for b in first_pass] == [899, 898]  # near-equal parts of at most B, no tiny remainder
    assert torch.equal(torch.cat(first_pass).sort().values, torch.arange(1797))
    assert not torch.equal(big_batch_indices(1797, 1000, 2, seed=3), first_pass[0])  # a new permutation
    assert torch.equal(big_batch_indices(1797, 1000, 1, seed=3), first_pass[1])  # a function of the epoch
    assert len(big_batch_indices(50, 1000, 7, seed=3)) == 50


def test_clipped_adam_clips_each_gradient_element():
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = ClippedAdam([weight], lr=0.1, clip=10.0)
    weight.grad = torch.tensor([100.0, -0.5, -30.0])
    optimizer.step()
    assert torch.equal(weight.grad, torch.tensor([10.0, -0.5, -10.0]))


# --- fitting ------------------------------------------------------------------------------------------
def test_learns_above_chance_on_digits(digits, fitted):
    probs = fitted.predict_proba(digits)
    assert probs.shape == (len(digits), 10)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert cluster_acc(digits.labels, probs.argmax(1)) > 0.25  # chance is ~0.11


def test_save_load_round_trip(tmp_path, digits, fitted):
    path = tmp_path / "model.ckpt"
    fitted.save(path)
    loaded = ClusterMethod.load(path)
    assert isinstance(loaded, GATCluster)
    assert np.allclose(loaded.predict_proba(digits), fitted.predict_proba(digits), atol=1e-6)
    # `assign --batch-size` changes only how many images go through at once, even above big_batch.
    larger = load_model(path, device="cpu", batch_size=4000)
    assert larger.predict_batch_size == 4000
    assert np.allclose(larger.predict_proba(digits), fitted.predict_proba(digits), atol=1e-5)


def test_same_seed_same_model(digits, fitted):
    subset = digits.subset(np.arange(300))
    again = GATCluster(k=10, seed=0, device="cpu", **FAST).fit(digits)
    assert np.array_equal(again.predict_proba(subset), fitted.predict_proba(subset))


def test_rgb_input_trains_on_luminance():
    rng = np.random.default_rng(0)
    from clusterkit.data.samples import ImageSet

    images = ImageSet(
        paths=[f"{i}.png" for i in range(40)], pixels=rng.integers(0, 255, (40, 3, 20, 20), dtype=np.uint8)
    )
    model = GATCluster(
        k=3, seed=0, device="cpu", epochs=1, big_batch=40, batch_size=8, repeats=1, width=4, convs_per_block=1
    ).fit(images)
    assert model.net_.backbone.features[0].in_channels == 1
    probs = model.predict_proba(images)
    assert probs.shape == (40, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
