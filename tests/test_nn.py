"""Network building blocks (clusterkit.nn) on hand-made cases: Gaussian attention, the VGG backbone,
BatchNorm statistics. The linear head's split (clusterkit.nn.heads) is tested with the refill that
plans it, in tests/test_refill.py."""

from __future__ import annotations

import pytest
import torch

from clusterkit.nn.attention import GaussianAttention, gaussian_mask, grid_coordinates
from clusterkit.nn.batchnorm import recompute_batchnorm
from clusterkit.nn.vgg import VGGBackbone


# --- attention ----------------------------------------------------------------------------------------
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


# --- backbone -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("side", "blocks", "map_side"), [(8, 2, 4), (16, 3, 4), (96, 3, 12), (4, 1, 4)])
def test_backbone_pooling_follows_input_size(side, blocks, map_side):
    net = VGGBackbone(1, (side, side), widths=(4, 8, 16), convs_per_block=1, out_dim=6)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == blocks + 1  # one conv per block here, plus the final 1x1
    assert net.map_size == (map_side, map_side)
    assert net(torch.rand(2, 1, side, side)).shape == (2, 6, map_side, map_side)


# --- BatchNorm ----------------------------------------------------------------------------------------
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
