"""IICC (Nguyen et al., "Joint Self-Supervised Image-Volume Representation Learning with Intra-Inter
Contrastive Clustering", AAAI 2023): one model for 2-D images and 3-D volumes.

A 2-D residual encoder reads images and the slices of volumes. The intra task is SwAV's
clustering-based contrastive learning on them: two augmented views, K prototypes, Sinkhorn-Knopp
codes of one view predicted from the other. A volume is a sequence of slice tokens (pooled
features of several encoder stages, projected); a Transformer with deformable attention over
slices assembles them, learning to predict tokens hidden behind a mask token (masked slice-embedding
prediction); the volume's embedding is the mean of its slices' 2-D embeddings plus the
Transformer's projected mean output (a branch that starts at zero), on which the inter task is SwAV
again between two views of the volume. The clusters are the prototypes: a sample's cluster is its
highest prototype score, images through the 2-D head, volumes through the volume head; both heads
score against the same prototypes, so that images and volumes of a mixed folder can share one
partition (measured: they need not; docs/results.md).

Equations, defaults and their sources, and departures: docs/methods.md#iicc.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clusterkit.config import Rule, option
from clusterkit.data.augment import AugmentOptions, BatchAugment
from clusterkit.data.samples import Samples, VolumeSet
from clusterkit.engine import EpochContext, FitContext, Phase, Trainer, all_gather_with_grad, resolve_device
from clusterkit.engine.optim import warmup_cosine
from clusterkit.engine.predict import float_batches
from clusterkit.errors import InputError
from clusterkit.losses import swapped_prediction_loss
from clusterkit.methods.base import ClusterMethod, load_net, net_state
from clusterkit.methods.registry import register
from clusterkit.nn.deformable import DeformableSliceTransformer, masked_mean, valid_mask
from clusterkit.nn.resnet import SmallResNet, projection_head


@dataclass
class IICCConfig(AugmentOptions):
    """Sources per default in docs/methods.md#iicc: SwAV's and the IICC code's loss and schedule
    settings; widths, epochs and batch sizes are ours, sized for a CPU budget of minutes."""

    epochs: int = option(100, "passes over the 2-D items (images and volume slices)", low=1)
    batch_size: int = option(64, "2-D items (images, slices) per step", low=2)
    volume_batch_size: int = option(32, "volumes per step, when the input holds volumes", low=2)
    lr: float = option(0.05, "peak learning rate of SGD (after the warm-up)", low=0, low_open=True)
    final_lr: float = option(0.0005, "learning rate at the end of the cosine decay", low=0)
    start_lr: float = option(0.0, "learning rate at the first step of the warm-up", low=0)
    warmup_epochs: int = option(10, "epochs of linear warm-up, counted in steps", low=0)
    weight_decay: float = option(1e-6, "SGD weight decay (SwAV: 1e-6)", low=0)
    temperature: float = option(0.1, "softmax temperature of the swapped prediction (SwAV: 0.1)", low=0, low_open=True)
    epsilon: float = option(0.05, "Sinkhorn-Knopp entropy regularisation (SwAV: 0.05)", low=0, low_open=True)
    sinkhorn_iterations: int = option(3, "Sinkhorn-Knopp iterations (SwAV: 3)", low=1)
    freeze_prototypes_steps: int = option(
        313, "steps at the start whose prototype gradients are dropped (SwAV: 313)", low=0
    )
    widths: tuple[int, ...] = option((32, 64, 128), "channels of the encoder's three residual stages")
    hidden: int = option(512, "hidden width of the projection heads", low=1)
    projection_dim: int = option(128, "dimension of the projected, normalised embedding (SwAV: 128)", low=2)
    token_dim: int = option(128, "dimension of a slice token and of the Transformer", low=8)
    layers: int = option(4, "deformable Transformer layers (IICC: 4)", low=1)
    heads: int = option(8, "attention heads per layer", low=1)
    points: int = option(4, "sampled slices per head and query (Deformable DETR: 4)", low=1)
    mask_ratio: float = option(
        0.1, "share of a volume's slice tokens hidden behind the mask token (IICC: 10%)", low=0, high=1, high_open=True
    )
    weight_masked: float = option(1.0, "weight of the masked slice-embedding prediction", low=0)
    weight_inter: float = option(1.0, "weight of the inter (volume) swapped prediction", low=0)
    min_depth_kept: float = option(
        0.5, "a volume view keeps a random run of at least this share of its slices", low=0, high=1, low_open=True
    )
    flip: float = option(
        0.0, "probability of a horizontal flip: 0 for digits and text, 0.5 for photos and scans", low=0, high=1
    )
    overcluster: tuple[int, ...] = option(
        (), "sizes of over-clustering prototype heads trained beside the k cluster prototypes"
    )
    max_depth: int = option(64, "slices kept per volume; a deeper one is resampled to this depth", low=1)

    rules = (*AugmentOptions.rules, Rule("final_lr", "<=", "lr"))


class IICCNet(nn.Module):
    """The encoder and its two heads, the slice Transformer and the shared prototypes."""

    def __init__(self, channels: int, config: IICCConfig, k: int) -> None:
        super().__init__()
        self.encoder = SmallResNet(channels, tuple(config.widths))
        self.projector = projection_head(self.encoder.feature_dim, config.hidden, config.projection_dim)
        self.slice_token = nn.Linear(sum(config.widths), config.token_dim)
        self.mask_token = nn.Parameter(torch.zeros(config.token_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.transformer = DeformableSliceTransformer(
            config.token_dim, config.layers, config.heads, config.points, 4 * config.token_dim
        )
        self.volume_projector = projection_head(config.token_dim, config.hidden, config.projection_dim)
        nn.init.zeros_(self.volume_projector[-1].weight)  # a residual branch that starts at zero
        nn.init.zeros_(self.volume_projector[-1].bias)
        # The cluster head (k prototypes) first, then any over-clustering heads (SwAV's and IICC's
        # MultiPrototypes): every head is trained by the same swapped prediction.
        self.prototypes = nn.Linear(config.projection_dim, k, bias=False)
        self.extra_prototypes = nn.ModuleList(
            nn.Linear(config.projection_dim, size, bias=False) for size in config.overcluster
        )

    def image_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the unit-norm projected embedding of each image or slice."""
        return F.normalize(self.projector(self.encoder(x)[0]), dim=1)

    def slices(self, volumes: torch.Tensor) -> SliceFeatures:
        """(B, D, C, H, W) -> each slice's token (the IICC code's slice embedding: every ResNet
        stage's pooled features, joined, a 1x1 convolution) and its 2-D embedding."""
        batch, depth = volumes.shape[:2]
        stages = self.encoder(volumes.flatten(0, 1))
        # Each stage's pooled features on the unit sphere before they are joined, as the IICC code's
        # `ResNet.forward_2D` does, so that no stage outweighs the others by its scale.
        joined = torch.cat([F.normalize(stage, dim=1) for stage in stages], dim=1)
        tokens = self.slice_token(joined).view(batch, depth, -1)
        embeddings = F.normalize(self.projector(stages[0]), dim=1).view(batch, depth, -1)
        return SliceFeatures(tokens, embeddings)

    def volume_embedding(self, slices: SliceFeatures, depths: torch.Tensor) -> torch.Tensor:
        """The unit-norm embedding of each volume: the mean of its slices' 2-D embeddings plus the
        projected mean output of the Transformer over its slice tokens. The Transformer's branch
        starts at zero (`volume_projector`'s last layer), so the inter task starts from what the
        intra task has learnt of each slice rather than from a random volume feature."""
        assembled = self.volume_projector(masked_mean(self.transformer(slices.tokens, depths), depths))
        return F.normalize(masked_mean(slices.embeddings, depths) + assembled, dim=1)

    def heads(self) -> list[nn.Linear]:
        return [self.prototypes, *self.extra_prototypes]

    def scores(self, embedding: torch.Tensor) -> torch.Tensor:
        """Cosines of the embedding with every head's prototypes, the heads side by side."""
        return torch.cat([head(embedding) for head in self.heads()], dim=1)

    def head_sizes(self) -> list[int]:
        return [head.out_features for head in self.heads()]

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Prototypes back onto the unit sphere, so that scores are cosines (SwAV, every step)."""
        for head in self.heads():
            head.weight.copy_(F.normalize(head.weight, dim=1))


class SliceFeatures(NamedTuple):
    """Per slice of a batch of volumes (B, D, dim): the token the Transformer reads, and the 2-D
    embedding the intra task trains."""

    tokens: torch.Tensor
    embeddings: torch.Tensor


@dataclass
class IICCBatch:
    """One step: two views of a batch of 2-D items, and (for volume inputs) two views of a batch of
    volumes with their depths and the slice positions hidden in the first."""

    images: tuple[torch.Tensor, torch.Tensor]
    volumes: tuple[torch.Tensor, torch.Tensor] | None = None
    depths: tuple[torch.Tensor, torch.Tensor] | None = None
    hidden: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images[0].shape[0])


class IICCSchedule:
    """IICC's training step as the engine's phase. An epoch is one shuffled pass over the 2-D
    items (every image and every valid slice of every volume) and one shuffled pass over the
    volumes, whose batches ride along on evenly spaced steps."""

    def __init__(self, samples: VolumeSet, config: IICCConfig) -> None:
        self.config = config
        self.augment = BatchAugment(config.augment_policy())
        depths = torch.as_tensor(np.asarray(samples.depths), dtype=torch.long)
        self.depths = depths
        self.volume_rows = torch.tensor([i for i, kind in enumerate(samples.file_kinds) if kind == "volume"])
        rows = torch.repeat_interleave(torch.arange(len(depths)), depths)
        starts = torch.cumsum(depths, 0) - depths
        self.items = torch.stack([rows, torch.arange(len(rows)) - starts[rows]], 1)  # (row, slice) per 2-D item
        self.steps_per_epoch = max(len(self.items) // config.batch_size, 1)

    def volume_steps(self) -> dict[int, int]:
        """step -> volume batch: an epoch passes over the volumes once, in batches of
        `volume_batch_size` spread evenly over its steps (the other steps train the 2-D task alone)."""
        if len(self.volume_rows) < 2:
            return {}
        count = max(len(self.volume_rows) // self.config.volume_batch_size, 1)
        count = min(count, self.steps_per_epoch)
        return {batch * self.steps_per_epoch // count: batch for batch in range(count)}

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def lr(self, step: int) -> float:
        cfg = self.config
        return warmup_cosine(
            step, self.total_steps, cfg.warmup_epochs * self.steps_per_epoch, cfg.lr, cfg.final_lr, cfg.start_lr
        )

    def _views(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(x, generator), self.augment(x, generator)

    def _volume_view(
        self, volumes: torch.Tensor, depths: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random run of each volume's slices (at least `min_depth_kept` of them), moved to the
        front, every slice augmented."""
        batch, depth = volumes.shape[:2]
        keep = torch.ceil(depths * self.config.min_depth_kept).long().clamp_min(1)
        kept = keep + (torch.rand(batch, generator=generator) * (depths - keep + 1)).long()
        start = (torch.rand(batch, generator=generator) * (depths - kept + 1)).long()
        index = (start[:, None] + torch.arange(depth)[None, :]).clamp(max=depth - 1)
        index = index[:, : int(kept.max())]  # past the longest run is padding only
        view = volumes[torch.arange(batch)[:, None], index.to(volumes.device)]
        view = self.augment(view.flatten(0, 1), generator).view_as(view)
        view = view * valid_mask(kept, index.shape[1]).to(view)[..., None, None, None]
        return view, kept

    def _hidden(self, depths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, D) True at the slices hidden behind the mask token: `mask_ratio` of each volume's
        slices, at least one where it has two or more (a volume of one slice has nothing to
        predict it from)."""
        depth = int(depths.max())
        scores = torch.rand(len(depths), depth, generator=generator)
        scores[~valid_mask(depths, depth)] = 2.0
        count = torch.where(depths > 1, torch.ceil(depths * self.config.mask_ratio).clamp_min(1), 0).long()
        ranks = scores.argsort(dim=1).argsort(dim=1)
        return ranks < count[:, None]

    def batches(self, ctx: EpochContext) -> Iterator[IICCBatch]:
        cfg = self.config
        generator = torch.Generator().manual_seed(ctx.seed)
        pixels = ctx.data.pixels
        order = self.items[torch.randperm(len(self.items), generator=generator)]
        volume_order = self.volume_rows[torch.randperm(len(self.volume_rows), generator=generator)]
        volume_steps = self.volume_steps()
        for step in range(self.steps_per_epoch):
            rows, slices = order[step * cfg.batch_size : (step + 1) * cfg.batch_size].unbind(1)
            x = pixels[rows.to(pixels.device), slices.to(pixels.device)].to(ctx.data.device).float().div_(255.0)
            batch = IICCBatch(self._views(x, generator))
            if step in volume_steps:
                start = volume_steps[step] * cfg.volume_batch_size
                chosen = volume_order[start : start + cfg.volume_batch_size]
                depths = self.depths[chosen]
                depth = int(depths.max())
                volumes = pixels[chosen.to(pixels.device), :depth].to(ctx.data.device).float().div_(255.0)
                first, depth1 = self._volume_view(volumes, depths, generator)
                second, depth2 = self._volume_view(volumes, depths, generator)
                batch.volumes, batch.depths = (first, second), (depth1, depth2)
                batch.hidden = self._hidden(depth1, generator)
            yield batch

    def loss(self, module: nn.Module, batch: IICCBatch, net: IICCNet) -> dict[str, torch.Tensor]:
        cfg = self.config
        swav = {"temperature": cfg.temperature, "epsilon": cfg.epsilon, "iterations": cfg.sinkhorn_iterations}
        n, sizes = len(batch), net.head_sizes()

        def swapped(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
            """The swapped prediction of every head, averaged over the heads."""
            views = [all_gather_with_grad(first.float()), all_gather_with_grad(second.float())]
            pairs = zip(*(view.split(sizes, dim=1) for view in views), strict=True)
            return sum(swapped_prediction_loss(list(pair), **swav) for pair in pairs) / len(sizes)

        scores = module(torch.cat(batch.images))
        intra = swapped(scores[:n], scores[n:])
        terms = {"intra": intra}
        total = intra
        if batch.volumes is not None:
            views, depths = batch.volumes, batch.depths
            slices = [net.slices(v) for v in views]
            hidden = batch.hidden.to(slices[0].tokens.device)
            # The masked prediction trains the Transformer and the mask token on fixed tokens, as the
            # official code trains it with the 2-D encoder frozen: through the tokens, the cheapest way
            # to predict a hidden token is to make every token alike (a collapse).
            fixed = slices[0].tokens.detach()
            masked = torch.where(hidden[..., None], net.mask_token.to(fixed), fixed)
            predicted = net.transformer(masked, depths[0])
            masked_loss = F.mse_loss(predicted[hidden].float(), fixed[hidden].float())
            volume_scores = [
                net.scores(net.volume_embedding(f, d.to(f.tokens.device))) for f, d in zip(slices, depths, strict=True)
            ]
            inter = swapped(*volume_scores)
            total = total + cfg.weight_inter * inter + cfg.weight_masked * masked_loss
            terms.update(inter=inter, masked=masked_loss)
        return {"loss": total, **terms}


class _ImageScores(nn.Module):
    """The 2-D path as one module (images -> prototype scores), the part the trainer wraps under
    torchrun; the volume path runs through the same parameters."""

    def __init__(self, net: IICCNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.scores(self.net.image_embedding(x))


@register
class IICC(ClusterMethod):
    name = "iicc"
    description = (
        "IICC (AAAI 2023): SwAV-style intra (2-D) and inter (3-D) contrastive clustering of images and volumes"
    )
    input_kinds = ("pixels", "volumes")
    uses_engine = True
    Config = IICCConfig

    def _build(self) -> IICCNet:
        channels = self.input_shape_[0] if self.input_kind_ == "pixels" else self.input_shape_[1]
        return IICCNet(int(channels), self.config, int(self.k_))

    def _fit(self, samples: Samples, context: FitContext) -> None:
        cfg = self.config
        volumes = samples if isinstance(samples, VolumeSet) else VolumeSet.from_images(samples)
        trainer = Trainer(
            volumes, seed=self.seed, device=self.device, context=context, fingerprint=self.resume_fingerprint()
        )
        self.device_ = str(trainer.device)
        self.net_ = self._build()
        schedule = IICCSchedule(volumes, cfg)
        scores = _ImageScores(self.net_)
        phase = Phase(
            name="iicc",
            epochs=cfg.epochs,
            loss=lambda module, batch: schedule.loss(module, batch, self.net_),
            optimizer=lambda params: torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay),
            module=scores,
            batch_size=cfg.batch_size,
            batches=schedule.batches,
            assign=lambda: self._proba(volumes, trainer.device).argmax(axis=1),
            lr_schedule=schedule.lr,
            frozen=lambda step: [h.weight for h in self.net_.heads()] if step < cfg.freeze_prototypes_steps else [],
            on_step=lambda step: self.net_.normalize_prototypes(),
        )
        if trainer.env.world_size > 1 and len(schedule.volume_rows):
            raise InputError("iicc trains volumes in one process (its volume path is not wrapped for torchrun)")
        trainer.fit(self.net_, [phase])
        self.net_.normalize_prototypes()
        self.net_.cpu().eval()

    # --- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, samples: Samples, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
        """Each sample's unit-norm embedding in the prototypes' space, images through the 2-D head and
        volumes through the volume head, and whether each row is a volume."""
        volumes = samples if isinstance(samples, VolumeSet) else VolumeSet.from_images(samples)
        is_volume = np.array([kind == "volume" for kind in volumes.file_kinds], dtype=bool)
        net = self.net_
        was_training = net.training
        net.to(device).eval()
        out = np.zeros((len(volumes), self.config.projection_dim), dtype=np.float64)
        try:
            images, done = np.flatnonzero(~is_volume), 0
            for x in float_batches(volumes.voxels[images, 0], self.predict_batch_size, device):
                out[images[done : done + len(x)]] = net.image_embedding(x).double().cpu().numpy()
                done += len(x)
            rows, depths = np.flatnonzero(is_volume), np.asarray(volumes.depths)
            per_batch = max(self.predict_batch_size // volumes.max_depth, 1)  # slices through the encoder at once
            for start in range(0, len(rows), per_batch):
                chosen = rows[start : start + per_batch]
                depth = int(depths[chosen].max())
                x = torch.from_numpy(np.asarray(volumes.voxels[chosen, :depth])).to(device).float().div_(255.0)
                features = net.slices(x)
                out[chosen] = (
                    net.volume_embedding(features, torch.as_tensor(depths[chosen], device=device))
                    .double()
                    .cpu()
                    .numpy()
                )
        finally:
            net.cpu().train(was_training)
        return out, is_volume

    def _proba(self, samples: Samples, device: torch.device) -> np.ndarray:
        embedding, _ = self._embed(samples, device)
        prototypes = self.net_.prototypes.weight.detach().double().cpu().numpy()
        scores = torch.from_numpy(embedding @ prototypes.T / self.config.temperature)
        return torch.softmax(scores, dim=1).numpy()

    def _predict_proba(self, samples: Samples) -> np.ndarray:
        """softmax(prototype scores / temperature): the distribution the swapped prediction trains."""
        return self._proba(samples, resolve_device(self.device))

    def _embedding(self, samples: Samples) -> np.ndarray:
        return self._embed(samples, resolve_device(self.device))[0].astype(np.float32)

    def check_shape(self, samples: Samples) -> None:
        """Images are taken as the model's slices; volumes of any depth (the Transformer reads any)."""
        fitted = tuple(self.input_shape_) if self.input_kind_ == "pixels" else tuple(self.input_shape_[1:])
        shape = tuple(samples.sample_shape)
        seen = shape if samples.kind == "pixels" else shape[1:]
        if seen != fitted:
            raise InputError(
                f"{samples.kind} slices are {'x'.join(map(str, seen))}, the model was fitted on {'x'.join(map(str, fitted))}"
            )

    def state_dict(self) -> dict[str, Any]:
        return net_state(self.net_)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net_ = load_net(self._build(), state)
