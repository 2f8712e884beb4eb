"""BatchNorm statistics recomputed for the current weights ("precise BN"; Wu & Johnson, "Rethinking
'Batch' in BatchNorm", 2021).

A BatchNorm layer's running mean and variance are an exponential average over past training
batches, taken with past weights and, in self-supervised training, on augmented views. Where a
method reads its own eval-mode predictions as targets, those statistics should be the current
network's on the images it predicts: recomputing them is one no-gradient pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set every BatchNorm layer's running statistics to the average, over `batches`, of each batch's
    mean and unbiased variance: the cumulative average (momentum None) of one train-mode pass of
    `net`, as torch.optim.swa_utils.update_bn does. Only the layers that train mode puts in training
    are touched: a part that stays in eval mode (a frozen pretrained trunk) keeps its statistics.
    The layers' momentum and the net's mode are restored afterwards; no weight changes."""
    was_training = net.training
    net.train()
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    if layers:
        for x in batches:
            net(x)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum
    net.train(was_training)
