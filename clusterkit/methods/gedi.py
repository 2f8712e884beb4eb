"""GEDI (Sansone and Manhaeve, "Unifying Self-Supervised Clustering and Energy-Based Models", TMLR
2025): one network is both a k-way cluster classifier and an energy-based model of the images,
E(x) = −logsumexp of its logits, trained with a lower bound on the likelihood whose three terms
penalise the failure modes of cluster-based self-supervised learning: the generative term
(representation collapse), the uniform prior on the batch-mean assignment (cluster collapse) and
the invariance between two augmented views (labels that change with the view).

Equations, defaults and their sources, and departures: docs/methods.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from clusterkit.config import MethodConfig, option
from clusterkit.data.augment import AugmentPolicy, BatchAugment
from clusterkit.data.samples import ImageSet
from clusterkit.engine import EpochContext, FitContext, Phase, Trainer, all_gather_with_grad, resolve_device
from clusterkit.engine.predict import predict_batches
from clusterkit.engine.seeding import derived_seed
from clusterkit.errors import InputError
from clusterkit.losses import contrastive_divergence, uniform_prior_loss, view_invariance_loss
from clusterkit.methods.base import ClusterMethod, load_net, net_state
from clusterkit.methods.registry import register
from clusterkit.nn.energy import ReplayBuffer, free_energy, sgld

# Pixels in [0, 1] are mapped to [-1, 1], the range of JEM's uniform chain starts and of the
# images its SGLD step and noise were set for (JEM `train_wrn_ebm.py` L196-200, L106-107).
LOW, HIGH = -1.0, 1.0
DIVERGED = 1e8  # JEM L354-357: a loss beyond this is taken for divergence


@dataclass
class GEDIConfig(MethodConfig):
    """Sources per default in docs/methods.md: the paper's toy setting (Adam 1e-3, 7k iterations),
    the author's GEDI-without-generation code (temperature, invariance weight, both terms' form),
    and JEM's sampler and data noise, which GEDI's code grew from."""

    iterations: int = option(7000, "optimizer steps (the paper's toy experiments: 7k)", low=1)
    batch_size: int = option(64, "images per step; the sampler draws as many chains (JEM: 64)", low=2)
    lr: float = option(1e-3, "Adam learning rate (the paper: 1e-3)", low=0, low_open=True)
    encoder: str = option(
        "mlp", "mlp (two hidden layers) or conv (five 3x3 convs, two average pools)", choices=("mlp", "conv")
    )
    hidden: int = option(256, "width of the MLP's hidden layers; the convnet's last conv and feature width", low=4)
    temperature: float = option(
        0.1, "softmax temperature of the clustering terms (GEDI-nogen: 0.1)", low=0, low_open=True
    )
    energy_logits: str = option(
        "raw",
        "energy of the raw cluster logits (JEM) or of the logits over the temperature (GEDI-nogen's z = proj / tau)",
        choices=("raw", "scaled"),
    )
    weight_generative: float = option(1.0, "weight of the generative term E(data) - E(samples); 0: the ablation", low=0)
    weight_prior: float = option(0.5, "weight of the uniform-prior term (GEDI-nogen: 0.5)", low=0)
    weight_invariance: float = option(
        2.0, "weight of the invariance term (GEDI-nogen: 0.5 x beta 0.1 = 0.05; 2 chosen on a development set)", low=0
    )
    sgld_steps: int = option(20, "SGLD steps per training step (JEM: 20 with a persistent buffer)", low=1)
    sgld_step_size: float = option(1.0, "SGLD step on the energy's input gradient (JEM: 1)", low=0, low_open=True)
    sgld_noise: float = option(0.01, "SGLD noise standard deviation (JEM: 0.01)", low=0)
    buffer_size: int = option(10000, "persistent chains in the replay buffer (JEM: 10,000)", low=1)
    reinit: float = option(
        0.05, "probability that a drawn chain restarts from uniform noise (JEM: 0.05)", low=0, high=1
    )
    data_noise: float = option(0.03, "Gaussian noise added to the data views, on the [-1, 1] scale (JEM: 0.03)", low=0)
    translate: float = option(
        0.125, "shift of the views, a fraction of the side (GEDI's pad-4 random crop of 32 px)", low=0, high=1
    )
    flip: float = option(
        0.0, "probability of a horizontal flip (GEDI: 0.5 for CIFAR, 0 for digits and SVHN)", low=0, high=1
    )

    def augment_policy(self) -> AugmentPolicy:
        return AugmentPolicy(flip=self.flip, translate=self.translate)


class EnergyClassifier(nn.Module):
    """Images (in [-1, 1]) -> k cluster logits, whose logsumexp is the negative energy: an encoder
    (an MLP, or a small convnet of VERA's kind: 3x3 convs, average pooling) and a linear head.
    LeakyReLU(0.2) and no normalisation layer: batch statistics would mix data and samples in the
    energy (JEM trains without, VERA's nets have none), and LeakyReLU keeps input gradients for SGLD."""

    def __init__(self, shape: tuple[int, ...], config: GEDIConfig, k: int) -> None:
        super().__init__()
        width = config.hidden
        if config.encoder == "conv":
            channels = shape[0]
            c1, c2, c3 = width // 4, width // 2, width
            self.encoder = nn.Sequential(
                *_conv(channels, c1), *_conv(c1, c1), nn.AvgPool2d(2, ceil_mode=True),
                *_conv(c1, c2), *_conv(c2, c2), nn.AvgPool2d(2, ceil_mode=True),
                *_conv(c2, c3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                nn.Linear(c3, width), nn.LeakyReLU(0.2),
            )  # fmt: skip
        else:
            self.encoder = nn.Sequential(
                nn.Flatten(), nn.Linear(int(np.prod(shape)), width), nn.LeakyReLU(0.2),
                nn.Linear(width, width), nn.LeakyReLU(0.2),
            )  # fmt: skip
        self.head = nn.Linear(width, k)
        self.energy_scale = 1 / config.temperature if config.energy_logits == "scaled" else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def energy_of(self, logits: torch.Tensor) -> torch.Tensor:
        """E = −logsumexp of the logits, raw or over the temperature (`energy_logits`)."""
        return free_energy(logits * self.energy_scale)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy_of(self(x))


def _conv(c_in: int, c_out: int) -> tuple[nn.Module, nn.Module]:
    return nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2)


def to_model_input(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the model's [-1, 1]."""
    return x * (HIGH - LOW) + LOW


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """The model's input space -> [0, 1] pixels, clamped (as JEM clamps only when saving images)."""
    return ((x - LOW) / (HIGH - LOW)).clamp(0, 1)


@dataclass
class GEDIBatch:
    """One step: two augmented, noised views of the same images and as many SGLD samples."""

    view1: torch.Tensor
    view2: torch.Tensor
    samples: torch.Tensor

    def __len__(self) -> int:
        return int(self.view1.shape[0])


class GEDISchedule:
    """GEDI's training step as the engine's phase: `batches` makes the views and runs the sampler
    (the network in eval mode, full precision) between steps; `loss` scores one step. The replay
    buffer is the trainer's extra state, so a resumed run continues the same chains."""

    def __init__(self, net: EnergyClassifier, trainer: Trainer, buffer: ReplayBuffer, config: GEDIConfig) -> None:
        self.net = net
        self.trainer = trainer
        self.buffer = buffer
        self.config = config
        self.augment = BatchAugment(config.augment_policy())
        self.steps_per_epoch = max(len(trainer.data) // config.batch_size, 1)

    @property
    def epochs(self) -> int:
        return -(-self.config.iterations // self.steps_per_epoch)

    def _view(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        view = to_model_input(self.augment(x, generator))
        noise = torch.randn(view.shape, generator=generator).to(view.device)
        return view + self.config.data_noise * noise

    def sample(self, generator: torch.Generator, device_generator: torch.Generator) -> torch.Tensor:
        """One step's negatives: SGLD from the buffer's chains, written back."""
        cfg = self.config
        rows, start = self.buffer.draw(cfg.batch_size, generator)
        was_training = self.net.training
        self.net.eval()
        x = sgld(
            self.net.energy,
            start.to(self.trainer.device),
            cfg.sgld_steps,
            cfg.sgld_step_size,
            cfg.sgld_noise,
            device_generator,
        )
        self.net.train(was_training)
        self.buffer.update(rows, x)
        return x

    def batches(self, ctx: EpochContext) -> Iterator[GEDIBatch]:
        cfg = self.config
        generator = torch.Generator().manual_seed(ctx.seed)
        device_generator = torch.Generator(device=self.trainer.device).manual_seed(derived_seed(ctx.seed, 1))
        steps = min(self.steps_per_epoch, cfg.iterations - ctx.epoch * self.steps_per_epoch)
        for step, batch in enumerate(ctx.shuffled(cfg.batch_size)):
            if step == steps:
                break
            if len(batch) < cfg.batch_size:  # drop the last, short batch, as GEDI's loaders do
                continue
            samples = self.sample(generator, device_generator)
            yield GEDIBatch(self._view(batch.x, generator), self._view(batch.x, generator), samples)

    def loss(self, module: nn.Module, batch: GEDIBatch) -> dict[str, torch.Tensor]:
        cfg = self.config
        n = len(batch)
        logits = module(torch.cat([batch.view1, batch.view2, batch.samples])).float()
        first, second, negatives = logits[:n], logits[n : 2 * n], logits[2 * n :]
        data_energy, sample_energy = self.net.energy_of(first), self.net.energy_of(negatives)
        generative = contrastive_divergence(data_energy, sample_energy)
        prior = (
            uniform_prior_loss(all_gather_with_grad(first / cfg.temperature))
            - math.log(first.shape[1]) * first.shape[1]
        )
        invariance = view_invariance_loss(first / cfg.temperature, second / cfg.temperature)
        total = cfg.weight_generative * generative + cfg.weight_prior * prior + cfg.weight_invariance * invariance
        return {
            "loss": total,
            "generative": generative,
            "prior": prior,
            "invariance": invariance,
            "e_data": data_energy.mean().detach(),
            "e_sample": sample_energy.mean().detach(),
        }


@register
class GEDI(ClusterMethod):
    name = "gedi"
    description = "GEDI (TMLR 2025): a cluster classifier that is also an energy-based model, trained with SGLD"
    uses_engine = True
    Config = GEDIConfig

    def _build(self) -> EnergyClassifier:
        return EnergyClassifier(tuple(self.input_shape_), self.config, int(self.k_))

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        buffer = ReplayBuffer(cfg.buffer_size, self.input_shape_, LOW, HIGH, cfg.reinit, derived_seed(self.seed, 7))
        trainer = Trainer(
            images,
            seed=self.seed,
            device=self.device,
            context=context,
            fingerprint=self.resume_fingerprint(),
            extra_state=buffer,
            mixed_precision=False,
        )
        if trainer.env.world_size > 1:  # one replay buffer: ranks would share its seeds and resume from rank 0's
            raise InputError(
                "gedi trains in one process: its replay buffer of SGLD chains is not sharded (run without torchrun)"
            )
        self.device_ = str(trainer.device)
        self.net_ = self._build()
        schedule = GEDISchedule(self.net_, trainer, buffer, cfg)
        phase = Phase(
            name="gedi",
            epochs=schedule.epochs,
            loss=schedule.loss,
            optimizer=lambda params: torch.optim.Adam(params, lr=cfg.lr),
            batch_size=cfg.batch_size,
            batches=schedule.batches,
            assign=lambda: self._logits_of(trainer).argmax(dim=1).numpy(),
            max_loss=DIVERGED,
        )
        trainer.fit(self.net_, [phase])
        self.net_.cpu().eval()

    def _logits_of(self, trainer: Trainer) -> torch.Tensor:
        was_training = self.net_.training
        self.net_.eval()
        logits = trainer.infer(lambda x: self.net_(to_model_input(x)), autocast=False)
        self.net_.train(was_training)
        return logits

    def _apply(self, images: ImageSet, fn) -> np.ndarray:
        return predict_batches(
            self.net_,
            lambda x: fn(to_model_input(x)),
            images.pixels,
            self.predict_batch_size,
            resolve_device(self.device),
        )

    def _predict_proba(self, images: ImageSet) -> np.ndarray:
        """softmax(logits / temperature) of the clean images, the distribution the clustering terms train."""
        return self._apply(images, lambda x: torch.softmax(self.net_(x).float() / self.config.temperature, dim=1))

    def _embedding(self, images: ImageSet) -> np.ndarray:
        """The encoder's output, the vector the cluster head reads."""
        return self._apply(images, self.net_.encoder).astype(np.float32)

    def energy(self, images: ImageSet) -> np.ndarray:
        """E(x) per image: higher is less like the training data (out-of-distribution screening)."""
        self.check_fitted()
        self._check_kind(images)
        self.check_shape(images)
        return self._apply(images, self.net_.energy)

    def generate(self, n_per_cluster: int, steps: int, seed: int, rounds: int = 8) -> tuple[torch.Tensor, list[int]]:
        """Images drawn from the model's p(x) ∝ exp(−E(x)) by SGLD from fresh, seeded uniform chains
        (JEM's generation), sorted by the cluster the model gives them: (k, n, C, H, W) in [0, 1] on
        the CPU, and how many each cluster got. Marginal, not per-cluster chains: with E = −l_y a
        chain follows one logit, which grows without bound off the data (on the toy moons such
        chains end farther from the data than uniform noise; the marginal's end on it). Chains run
        in batches of k·n until every cluster has n or `rounds` batches ran; a cluster the model
        rarely generates keeps fewer, left grey."""
        self.check_fitted()
        if n_per_cluster < 1 or steps < 1:
            raise InputError(f"sampling needs at least one image and one step, got {n_per_cluster} and {steps}")
        cfg, k = self.config, int(self.k_)
        device = resolve_device(self.device)
        generator = torch.Generator().manual_seed(seed)
        device_generator = torch.Generator(device=device).manual_seed(derived_seed(seed, 1))
        grid = torch.full((k, n_per_cluster, *self.input_shape_), 0.5)
        counts = [0] * k
        net = self.net_.to(device).eval()
        try:
            for _ in range(rounds):
                start = LOW + (HIGH - LOW) * torch.rand((k * n_per_cluster, *self.input_shape_), generator=generator)
                x = sgld(
                    net.energy,
                    start.to(device),
                    steps,
                    cfg.sgld_step_size,
                    cfg.sgld_noise,
                    device_generator,
                )
                with torch.no_grad():
                    clusters = net(x).argmax(dim=1).cpu()
                for image, cluster in zip(to_pixels(x).cpu(), clusters.tolist(), strict=True):
                    if counts[cluster] < n_per_cluster:
                        grid[cluster, counts[cluster]] = image
                        counts[cluster] += 1
                if min(counts) == n_per_cluster:
                    break
        finally:
            net.cpu()
        return grid, counts

    def state_dict(self) -> dict[str, Any]:
        return net_state(self.net_)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net_ = load_net(self._build(), state)
