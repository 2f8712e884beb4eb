"""Clustering heads: the softmax label layer, and a linear head's surgery for an empty cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from clusterkit.algorithms.refill import Split


def label_head(in_features: int, k: int) -> nn.Sequential:
    """The official MLP [features, k, k] ending in a softmax: the Label Feature Theorem's one-hot layer."""
    return nn.Sequential(nn.Linear(in_features, k), nn.ReLU(inplace=True), nn.Linear(k, k), nn.Softmax(dim=1))


def _logits(head: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """The head's logits on the CPU, in the head's own dtype (as its predictions are computed)."""
    weight, bias = head.weight.detach().cpu(), head.bias.detach().cpu()
    return features.to(weight.dtype) @ weight.T + bias


@torch.no_grad()
def predicted_clusters(head: nn.Linear, features: torch.Tensor) -> np.ndarray:
    return _logits(head, features).argmax(dim=1).numpy()


@torch.no_grad()
def split_linear_head(head: nn.Linear, split: Split, features: torch.Tensor) -> int:
    """Row `empty` of a linear softmax head := row `donor` + ε(normal, offset), so that among the
    donor's images the argmax follows the 2-means split. ε keeps every other image's argmax
    (half its smallest margin to the donor; exact ties are left out, ambiguous anyway), and
    keeps logit_empty − logit_donor within ±1, a perturbation as DeepCluster's: the two clusters'
    images then have a confidence of at most e/(1+e) ≈ 0.73 until further training sharpens them.
    Returns how many images the head now gives to `empty`, in its own dtype."""
    logits = _logits(head, features)
    normal = torch.from_numpy(split.normal).to(logits.dtype)
    side = features.to(logits.dtype) @ normal + split.offset
    others = (logits.argmax(dim=1) != split.donor) & (side > 0)
    margin = logits[others].max(dim=1).values - logits[others, split.donor]
    ratio = margin[margin > 0] / side[others][margin > 0]
    epsilon = min(
        1.0 / float(side.abs().max().clamp_min(1e-12)), 0.5 * float(ratio.min()) if len(ratio) else float("inf")
    )
    head.weight[split.empty] = (head.weight[split.donor].cpu() + epsilon * normal).to(head.weight)
    head.bias[split.empty] = (head.bias[split.donor].cpu() + epsilon * split.offset).to(head.bias)
    return int((predicted_clusters(head, features) == split.empty).sum())
