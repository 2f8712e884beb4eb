"""A convolutional autoencoder whose encoder can run clean or corrupted (dropout) with the same
weights, and that returns every layer's activations so losses can reconstruct each of them
(DEPICT's layer-wise reconstruction; reusable by any method that needs a conv embedding).

Input channels and size come from the data: the decoder's transposed convolutions are asked for
the exact shapes the encoder saw, so odd sizes reconstruct without hand-tuned output padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Encoded:
    """Activations of one encoder pass: `hidden` per conv layer (after the non-linearity) and the
    embedding."""

    hidden: list[torch.Tensor]
    embedding: torch.Tensor


class ConvAutoencoder(nn.Module):
    """Conv layers (LeakyReLU) -> dense embedding (tanh); the decoder mirrors it back to tanh pixels.

    `dropouts[0]` corrupts the input, `dropouts[i]` the output of conv layer i; they act only when
    `encode(x, noisy=True)`.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        embed_dim: int,
        channels: Sequence[int] = (50, 50),
        kernels: Sequence[int] = (4, 5),
        strides: Sequence[int] = (2, 2),
        paddings: Sequence[int] = (0, 2),
        dropouts: Sequence[float] = (0.1, 0.1, 0.0),
        leak: float = 0.01,
    ) -> None:
        super().__init__()
        if not len(channels) == len(kernels) == len(strides) == len(paddings) == len(dropouts) - 1:
            raise ValueError("channels, kernels, strides and paddings need one entry per conv layer, dropouts one more")
        self.leak = leak
        self.dropouts = tuple(dropouts)
        self.shapes = [tuple(image_size)]
        self.convs = nn.ModuleList()
        self.deconvs = nn.ModuleList()
        previous = in_channels
        for width, kernel, stride, pad in zip(channels, kernels, strides, paddings, strict=True):
            self.convs.append(nn.Conv2d(previous, width, kernel, stride, pad))
            # The mirror maps this layer's output back to its input (the last one to tanh pixels).
            self.deconvs.insert(0, nn.ConvTranspose2d(width, previous, kernel, stride, pad))
            h, w = self.shapes[-1]
            self.shapes.append(((h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1))
            if min(self.shapes[-1]) < 1:
                raise ValueError(f"images of {image_size[0]}x{image_size[1]} are too small for this encoder")
            previous = width
        self.code_shape = (previous, *self.shapes[-1])
        flat = previous * self.shapes[-1][0] * self.shapes[-1][1]
        self.embed = nn.Linear(flat, embed_dim)
        self.unembed = nn.Linear(embed_dim, flat)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor, noisy: bool = False) -> Encoded:
        hidden = []
        h = self._drop(x, 0, noisy)
        for i, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(h), self.leak)
            hidden.append(h)
            h = self._drop(h, i + 1, noisy)
        return Encoded(hidden, torch.tanh(self.embed(h.flatten(1))))

    def decode(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Reconstructions of [input, hidden 1, ..., hidden L], aligned with `Encoded.hidden`."""
        h = F.leaky_relu(self.unembed(z), self.leak).view(-1, *self.code_shape)
        outputs = [h]
        for depth, deconv in enumerate(self.deconvs):
            h = deconv(h, output_size=self.shapes[-depth - 2])
            last = depth == len(self.deconvs) - 1
            h = torch.tanh(h) if last else F.leaky_relu(h, self.leak)
            outputs.append(h)
        return outputs[::-1]

    def _drop(self, h: torch.Tensor, index: int, noisy: bool) -> torch.Tensor:
        p = self.dropouts[index]
        return F.dropout(h, p, training=True) if noisy and p > 0 else h
