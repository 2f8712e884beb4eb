"""Per-image augmentation of whole batches (clusterkit.data.augment): torchvision's transforms, seeded draws."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from clusterkit.data.augment import AugmentPolicy, BatchAugment, inverse_affine, shift_hue, warp
from clusterkit.methods.gatcluster import GATClusterConfig


def test_affine_and_hue_match_torchvision_v2():
    x = torch.rand(1, 3, 12, 10)
    reference = TF.affine(
        x, angle=7.0, translate=[1.0, -2.0], scale=1.1, shear=[8.0, 0.0], interpolation=InterpolationMode.BILINEAR
    )
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
