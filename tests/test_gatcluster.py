"""GATCluster: its building blocks on hand-made cases, and short fits on the built-in digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from clusterkit.data.augment import AugmentPolicy, BatchAugment, inverse_affine, shift_hue, warp
from clusterkit.methods.factory import load_model
from clusterkit.data.loading import load_images
from clusterkit.losses import (
    expected_agreement_loss,
    mean_prediction_entropy,
    pairwise_relation_loss,
    prior_targets,
    probability_bce,
)
from clusterkit.methods.base import ClusterMethod
from clusterkit.engine.optim import ClippedAdam
from clusterkit.methods.gatcluster import (
    GATCluster,
    GATClusterConfig,
    GATClusterNet,
    big_batch_indices,
    relation_labels,
)
from clusterkit.metrics import cluster_acc
from clusterkit.nn.attention import GaussianAttention, gaussian_mask, grid_coordinates
from clusterkit.nn.batchnorm import recompute_batchnorm
from clusterkit.nn.vgg import VGGBackbone

# A few outer iterations of a narrow network: enough to beat chance clearly, in seconds. No flips:
# a mirrored digit is another glyph, so flip invariance only slows down such a short run.
FAST = dict(epochs=4, big_batch=1000, repeats=4, width=16, convs_per_block=2, flip=0.0)


@pytest.fixture(scope="module")
def digits():
    return load_images("builtin:digits")


@pytest.fixture(scope="module")
def fitted(digits):
    return GATCluster(k=10, seed=0, device="cpu", **FAST).fit(digits)


# --- attention --------------------------------------------------------------------------------------
def test_grid_coordinates_span_unit_square():
    coords = grid_coordinates(4, 3)
    assert coords.shape == (12, 2)
    assert coords.min() == 0 and coords.max() == 1
    assert torch.allclose(coords[-1], torch.tensor([1.0, 1.0]))


def test_gaussian_mask_peaks_at_centre_and_widens_with_sigma():
    coords = grid_coordinates(5, 5)
    narrow, wide = gaussian_mask(torch.tensor([[0.5, 0.5, 0.1], [0.5, 0.5, 0.9]]), coords, lam=0.05)
    centre = 2 * 5 + 2
    assert narrow[centre] == pytest.approx(1.0) and wide[centre] == pytest.approx(1.0)
    assert narrow.argmax() == centre
    assert (wide >= narrow).all() and wide.sum() > narrow.sum()


def test_attention_module_shapes_and_ranges():
    torch.manual_seed(0)
    module = GaussianAttention(channels=8, map_size=(4, 6), hidden=5)
    features = torch.randn(7, 8, 4, 6)
    attended, mask, theta = module(features)
    assert attended.shape == (7, 8) and mask.shape == (7, 4, 6) and theta.shape == (7, 3)
    assert ((theta > 0) & (theta < 1)).all()  # mu and sigma through a sigmoid
    assert ((mask > 0) & (mask <= 1)).all()
    expected = (features * mask[:, None]).sum(dim=(2, 3))
    assert torch.allclose(attended, expected, atol=1e-5)


def test_attention_sum_rescaled_to_reference_cells():
    torch.manual_seed(0)
    plain = GaussianAttention(channels=4, map_size=(12, 12), hidden=3)
    scaled = GaussianAttention(channels=4, map_size=(12, 12), hidden=3, cells=36)
    scaled.load_state_dict(plain.state_dict())
    features = torch.randn(2, 4, 12, 12)
    plain.eval(), scaled.eval()
    assert torch.allclose(scaled(features)[0], plain(features)[0] * 36 / 144, atol=1e-6)


def test_network_maps_and_distributions():
    net = GATClusterNet(1, (8, 8), 10, GATClusterConfig(width=8, convs_per_block=1)).eval()
    probs, probs_att = net(torch.rand(5, 1, 8, 8))
    assert probs.shape == probs_att.shape == (5, 10)
    assert torch.allclose(probs.sum(1), torch.ones(5)) and torch.allclose(probs_att.sum(1), torch.ones(5))
    mask, theta = net.attention_maps(torch.rand(5, 1, 8, 8))
    assert mask.shape == (5, 4, 4) and theta.shape == (5, 3)


@pytest.mark.parametrize(("side", "blocks", "map_side"), [(8, 2, 4), (16, 3, 4), (96, 3, 12), (4, 1, 4)])
def test_backbone_pooling_follows_input_size(side, blocks, map_side):
    net = VGGBackbone(1, (side, side), widths=(4, 8, 16), convs_per_block=1, out_dim=6)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == blocks + 1  # one conv per block here, plus the final 1x1
    assert net.map_size == (map_side, map_side)
    assert net(torch.rand(2, 1, side, side)).shape == (2, 6, map_side, map_side)


# --- losses and targets ------------------------------------------------------------------------------
def test_mean_entropy_is_maximal_at_uniform():
    k = 10
    uniform = torch.full((6, k), 1 / k)
    assert mean_prediction_entropy(uniform).item() == pytest.approx(math.log(k), abs=1e-5)
    balanced_one_hot = torch.eye(k)  # confident and balanced: also maximal
    assert mean_prediction_entropy(balanced_one_hot).item() == pytest.approx(math.log(k), abs=1e-5)
    collapsed = torch.eye(k)[[3] * 6]
    assert mean_prediction_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-5)
    skewed = torch.softmax(torch.randn(6, k), dim=1)
    assert mean_prediction_entropy(skewed) < math.log(k)


def test_targets_balance_and_sharpen():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    similarity = prior_targets(probs, power=1.0, freq_exponent=1.0)
    attention = prior_targets(probs, power=2.0, freq_exponent=1.0)
    assert torch.allclose(similarity.sum(1), torch.ones(3)) and torch.allclose(attention.sum(1), torch.ones(3))
    # Dividing by the big cluster's frequency moves mass towards the small one...
    assert (similarity[:, 1] > probs[:, 1]).all()
    # ...and squaring sharpens relative to the balanced target.
    assert attention[0, 0] > similarity[0, 0]


def test_agreement_and_bce_on_hand_made_cases():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_agreement_loss(target, target).item() == pytest.approx(-1.0)
    assert expected_agreement_loss(target.flip(1), target).item() == pytest.approx(0.0)
    assert probability_bce(torch.tensor([0.5]), torch.tensor([1.0])).item() == pytest.approx(math.log(2), abs=1e-6)
    assert probability_bce(target, target).item() < 1e-5


def test_relation_loss_rewards_matching_pairs():
    probs = torch.tensor([[0.98, 0.01, 0.01], [0.97, 0.02, 0.01], [0.01, 0.01, 0.98]])
    same = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    wrong = torch.eye(3)
    assert pairwise_relation_loss(probs, same) < 0.1 < pairwise_relation_loss(probs, wrong)


def test_relation_labels_fall_back_when_a_cluster_is_nearly_empty():
    rng = np.random.default_rng(0)
    centres = np.eye(3)
    balanced = np.repeat(centres, 20, axis=0) + 0.01 * rng.standard_normal((60, 3))
    labels = relation_labels(balanced, k=3, restarts=2, min_ratio=0.1, seed=0)
    assert labels is not None and sorted(np.bincount(labels)) == [20, 20, 20]
    lopsided = np.concatenate([balanced[:58], balanced[40:41] + 5])  # a cluster of 1 < 0.1 * 59 / 3
    assert relation_labels(lopsided, k=3, restarts=2, min_ratio=0.1, seed=0) is None


def test_recompute_batchnorm_sets_the_batches_averaged_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    net.eval()
    batches = [torch.randn(5, 1, 4, 4) * 3 + 2 for _ in range(3)]
    recompute_batchnorm(net, batches)
    features = [net[0](x).detach() for x in batches]  # per batch: 5 images x 16 positions per channel
    bn = net[1]
    assert torch.allclose(bn.running_mean, torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([f.var(dim=(0, 2, 3)) for f in features]).mean(0), rtol=1e-4)
    # Only the statistics change: weights, momentum and mode are as before.
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert bn.momentum == 0.1 and not net.training


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


# --- augmentation -------------------------------------------------------------------------------------
def test_affine_and_hue_match_torchvision_v2():
    x = torch.rand(1, 3, 12, 10)
    reference = TF.affine(x, angle=7.0, translate=[1.0, -2.0], scale=1.1, shear=[8.0, 0.0],
                          interpolation=InterpolationMode.BILINEAR)
    matrix = inverse_affine(torch.tensor([7.0]), torch.tensor([[1.0, -2.0]]), torch.tensor([1.1]), torch.tensor([8.0]))
    assert torch.allclose(warp(x, matrix), reference, atol=1e-5)
    assert torch.allclose(shift_hue(x, torch.tensor([0.2])), TF.adjust_hue(x, 0.2), atol=1e-5)


def test_batch_augment_draws_per_image_and_is_seeded():
    augment = BatchAugment(GATClusterConfig().augment_policy())
    x = torch.rand(1, 3, 16, 16).repeat(8, 1, 1, 1)
    first = augment(x, torch.Generator().manual_seed(1))
    again = augment(x, torch.Generator().manual_seed(1))
    assert first.shape == x.shape and torch.equal(first, again)
    assert not torch.allclose(first[0], first[1])  # same image, different draws
    assert first.min() >= 0 and first.max() <= 1
    flip_only = BatchAugment(AugmentPolicy(flip=1.0))(x, torch.Generator().manual_seed(0))
    assert torch.allclose(flip_only, x.flip(-1), atol=1e-5)


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

    images = ImageSet(paths=[f"{i}.png" for i in range(40)], pixels=rng.integers(0, 255, (40, 3, 20, 20), dtype=np.uint8))
    model = GATCluster(k=3, seed=0, device="cpu", epochs=1, big_batch=40, batch_size=8, repeats=1, width=4,
                       convs_per_block=1).fit(images)
    assert model.net_.backbone.features[0].in_channels == 1
    probs = model.predict_proba(images)
    assert probs.shape == (40, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
