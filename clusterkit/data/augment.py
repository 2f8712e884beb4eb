"""Random augmentations of a whole batch of image tensors at once, with parameters drawn per image.

torchvision's v2 transforms draw one set of parameters per call, so a batch passed through
`v2.RandomAffine` gets the same rotation for every image; looping over images instead costs a few
kernel launches per image. `BatchAugment` keeps v2's parameter ranges and formulas (flip,
`ColorJitter`, `RandomAffine` with torchvision's inverse affine matrix) but draws them
per image and applies them as a few batched tensor operations (one `grid_sample` for flip + affine),
on whatever device the batch is on. Random draws come from an explicit CPU generator, so a seed
gives the same augmentations on CPU and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from clusterkit.config import MethodConfig, Rule, option


@dataclass(frozen=True)
class AugmentPolicy:
    """Ranges as in torchvision v2: factors are drawn from [1 - v, 1 + v] (hue from [-v, v]);
    `translate` is a fraction of the side, `degrees`/`shear` in degrees, `scale` a (low, high) range."""

    flip: float = 0.5
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    degrees: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    shear: float = 0.0


@dataclass
class AugmentOptions(MethodConfig):
    """The augmentation as method options (`--set KEY=VALUE`), for the methods that train on two
    augmented views. The defaults are GATCluster's official pipeline (niuchuangnn/GATCluster @
    cf0e20f, docs/methods.md); a method redeclares an option to give it another default."""

    flip: float = option(
        0.5,
        "probability of a horizontal flip: a property of the domain; 0.5 (official, STL-10) suits photos, give 0 for digits or text",
        low=0,
        high=1,
    )
    brightness: float = option(0.3, "brightness factor drawn from [1 - v, 1 + v]", low=0, high=1)
    contrast: float = option(0.3, "contrast factor drawn from [1 - v, 1 + v]", low=0, high=1)
    hue: float = option(0.2, "hue shift drawn from [-v, v] of a turn (colour images only)", low=0, high=0.5)
    degrees: float = option(10.0, "rotation drawn from [-v, v] degrees", low=0)
    translate: float = option(0.1, "shift drawn from [-v, v] of the image side", low=0, high=1)
    scale_min: float = option(0.8, "smallest zoom factor of the random affine", low=0, low_open=True)
    scale_max: float = option(1.2, "largest zoom factor of the random affine", low=0, low_open=True)
    shear: float = option(10.0, "x-shear drawn from [-v, v] degrees", low=0)

    rules = (Rule("scale_min", "<=", "scale_max"),)

    def augment_policy(self) -> AugmentPolicy:
        return AugmentPolicy(
            flip=self.flip,
            brightness=self.brightness,
            contrast=self.contrast,
            hue=self.hue,
            degrees=self.degrees,
            translate=self.translate,
            scale=(self.scale_min, self.scale_max),
            shear=self.shear,
        )


class BatchAugment:
    """`augment(x, generator)`: x float (N, C, H, W) in [0, 1] -> augmented batch, same device.

    Order as in GATCluster's pipeline: flip, colour jitter (brightness, contrast, saturation, hue in
    this fixed order; v2 shuffles it), then affine. Affine sampling is bilinear with
    zeros outside the image (v2 defaults to nearest, which is blocky on small images).
    """

    def __init__(self, policy: AugmentPolicy) -> None:
        self.policy = policy

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.policy
        n = x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        def factor(spread: float) -> torch.Tensor:
            return uniform(1 - spread, 1 + spread).to(x.device)

        if p.brightness:
            x = (x * factor(p.brightness).view(n, 1, 1, 1)).clamp(0, 1)
        if p.contrast:
            x = blend(x, gray(x).mean(dim=(1, 2, 3), keepdim=True), factor(p.contrast))
        if p.saturation and x.shape[1] == 3:
            x = blend(x, gray(x), factor(p.saturation))
        if p.hue and x.shape[1] == 3:
            x = shift_hue(x, uniform(-p.hue, p.hue).to(x.device))
        flip = torch.rand(n, generator=generator) < p.flip
        if p.degrees or p.translate or p.scale != (1.0, 1.0) or p.shear or flip.any():
            height, width = x.shape[2:]
            shift = torch.stack(
                [uniform(-p.translate, p.translate) * width, uniform(-p.translate, p.translate) * height], 1
            )
            matrix = inverse_affine(
                angle=uniform(-p.degrees, p.degrees),
                translate=shift,
                scale=uniform(*p.scale),
                shear=uniform(-p.shear, p.shear),
            )
            matrix[flip, 0] *= -1  # flip first: sample the flipped image at the affine's source point
            x = warp(x, matrix.to(x.device))
        return x


def gray(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else TF.rgb_to_grayscale(x)


def blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """v2's `_blend` with one ratio per image."""
    ratio = ratio.view(-1, 1, 1, 1)
    return (ratio * x + (1 - ratio) * other).clamp(0, 1)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB images by `shift` (fractions of a turn), one value per image."""
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    delta = maxc - minc
    r, g, b = x.unbind(1)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(argmax == 0, (g - b) / safe, torch.where(argmax == 1, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = (hue / 6 + shift.view(-1, 1, 1)).remainder(1.0)
    saturation = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    # HSV -> RGB via the closed form f(n) = v - v*s*max(0, min(k, 4 - k, 1)), k = (n + 6h) mod 6.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = (n + 6 * hue).remainder(6.0)
        channels.append(maxc - maxc * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(channels, dim=1)


def inverse_affine(
    angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor
) -> torch.Tensor:
    """torchvision's inverse affine matrix (rotation, x-shear, scale, translation about the centre),
    one (2, 3) matrix per image, mapping output pixel offsets from the centre to input offsets."""
    rot = torch.deg2rad(angle)
    sx = torch.deg2rad(shear)
    a = torch.cos(rot)
    b = -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
    c = torch.sin(rot)
    d = -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
    linear = torch.stack([torch.stack([d, -b], 1), torch.stack([-c, a], 1)], 1) / scale.view(-1, 1, 1)
    offset = -(linear @ translate.unsqueeze(-1))
    return torch.cat([linear, offset], dim=2)


def warp(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample each image at `matrix @ (pixel offset from centre, 1)` (bilinear, zeros outside)."""
    height, width = x.shape[2:]
    to_norm = torch.tensor([2.0 / width, 2.0 / height], device=x.device)
    theta = matrix.clone()
    theta[:, :, :2] *= torch.tensor([[1.0, height / width], [width / height, 1.0]], device=x.device)
    theta[:, :, 2] *= to_norm
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
