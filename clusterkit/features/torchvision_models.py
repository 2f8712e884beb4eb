"""torchvision's model builders as backbones: weights from a local file or a named weights entry
(`DEFAULT`, `IMAGENET1K_V1`, ...) found in torch's own cache, never downloaded; the preprocessing is
the weights' `transforms()`."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from clusterkit.errors import InputError
from clusterkit.features.backbones import (
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

# The classification layer each builder ends in: replaced by Identity, so the net returns the
# pooled penultimate features (ConvNeXt keeps its final LayerNorm, which belongs to them).
HEADS = {
    "resnet18": "fc",
    "resnet50": "fc",
    "vit_b_16": "heads",
    "convnext_tiny": "classifier.2",
    "efficientnet_b0": "classifier",
}
# The last top-level layer of each convolutional builder's map: its trunk is the model's top-level
# layers up to this one, which leaves out the pooling and the classifier.
MAP_ENDS = {"resnet18": "layer4", "resnet50": "layer4", "efficientnet_b0": "features", "convnext_tiny": "features"}


@register(*HEADS)
def torchvision_backbone(name: str, weights: str | None) -> Backbone:
    import torch

    entry = _entry(name, weights)
    path, weights_name = _weights_file(name, weights)
    net = _pretrained(name, path)
    parent_name, _, attribute = HEADS[name].rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    if not hasattr(parent, attribute):
        raise InputError(f"torchvision's {name} has no layer {HEADS[name]} to take features before")
    setattr(parent, attribute, torch.nn.Identity())
    return Backbone(name, net, entry.transforms(), weights_name, file_sha256(path))


@register(*MAP_ENDS, registry=TRUNKS)
def torchvision_trunk(name: str, weights: str | None, pretrained: bool) -> FeatureMapTrunk:
    """The model's layers up to MAP_ENDS[name], normalised as its weights' `transforms()` say."""
    from torch import nn
    from torchvision import models

    net = _pretrained(name, _weights_file(name, weights)[0]) if pretrained else models.get_model(name, weights=None)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for layer_name, layer in net.named_children():
        layers[layer_name] = layer
        if layer_name == MAP_ENDS[name]:
            break
    transform = _entry(name, weights).transforms()
    return FeatureMapTrunk(name, nn.Sequential(layers), tuple(transform.mean), tuple(transform.std))


def _entry(name: str, weights: str | None) -> Any:
    """The torchvision weights entry `weights` names (DEFAULT where None); a file of ours takes the
    DEFAULT entry's preprocessing, that of the weights it was trained from."""
    from torchvision import models

    entries = models.get_model_weights(name)
    choice = weights or "DEFAULT"
    return entries[choice] if choice in entries.__members__ else entries.DEFAULT


def _weights_file(name: str, weights: str | None) -> tuple[Path, str]:
    """The local file of `weights` (a weights name looked up in torch's cache, or a path), and the
    name that finds it again."""
    import torch
    from torchvision import models

    entries = models.get_model_weights(name)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    choice = weights or "DEFAULT"
    if choice not in entries.__members__:
        path = existing_file(
            choice, f"give a state-dict file of {name}, or a weights name ({', '.join(entries.__members__)})"
        )
        return path, str(path)
    entry = entries[choice]
    file_name = entry.url.rsplit("/", 1)[-1]
    path = existing_file(
        cache / file_name,
        f"torchvision's {entries.__name__}.{entry.name} for {name}: put {file_name} (from {entry.url}) "
        f"in {cache} (TORCH_HOME), or give {WEIGHTS_HINT}",
    )
    return path, entry.name


def _pretrained(name: str, path: Path) -> Any:
    """torchvision's `name` with the weights in `path`."""
    from torchvision import models

    net = models.get_model(name, weights=None)
    load_weights(net, read_state_dict(path, name), path, name)
    return net
