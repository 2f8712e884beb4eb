"""torchvision's model builders as backbones: weights from a local file or a named weights entry
(`DEFAULT`, `IMAGENET1K_V1`, ...) found in torch's own cache, never downloaded; the preprocessing is
the weights' `transforms()`."""

from __future__ import annotations

from pathlib import Path

from clusterkit.errors import InputError
from clusterkit.features.backbones import (
    Backbone,
    existing_file,
    file_sha256,
    load_weights,
    read_state_dict,
    register,
)

# The classification layer each builder ends in: replaced by Identity, so the net returns the
# pooled penultimate features (ConvNeXt keeps its final LayerNorm, which belongs to them).
HEADS = {
    "resnet18": "fc",
    "resnet50": "fc",
    "vit_b_16": "heads",
    "convnext_tiny": "classifier.2",
    "efficientnet_b0": "classifier",
}


@register(*HEADS)
def torchvision_backbone(name: str, weights: str | None) -> Backbone:
    import torch
    from torchvision import models

    entries = models.get_model_weights(name)
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    choice = weights or "DEFAULT"
    if choice in entries.__members__:
        entry = entries[choice]
        file_name = entry.url.rsplit("/", 1)[-1]
        path = existing_file(
            cache / file_name,
            f"torchvision's {entries.__name__}.{entry.name} for {name}: put {file_name} (from {entry.url}) "
            f"in {cache} (TORCH_HOME), or give --weights FILE",
        )
        weights_name = entry.name
    else:
        entry = entries.DEFAULT  # a state dict of ours: the preprocessing of the weights it was trained from
        path = existing_file(
            choice, f"give a state-dict file of {name}, or a weights name ({', '.join(entries.__members__)})"
        )
        weights_name = str(path)
    net = models.get_model(name, weights=None)
    load_weights(net, read_state_dict(path, name), path, name)
    parent_name, _, attribute = HEADS[name].rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    if not hasattr(parent, attribute):
        raise InputError(f"torchvision's {name} has no layer {HEADS[name]} to take features before")
    setattr(parent, attribute, torch.nn.Identity())
    return Backbone(name, net, entry.transforms(), weights_name, file_sha256(path))
