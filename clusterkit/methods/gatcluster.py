"""GATCluster (Niu, Zhang, Wang, Liang, ECCV 2020): a self-supervised Gaussian-attention network that
outputs cluster labels directly (a k-way softmax), trained with four self-generated tasks in a
two-step schedule whose memory does not grow with the big batch.

Equations, defaults and their sources, and departures from the paper: docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from clusterkit.config import Rule, option
from clusterkit.data.augment import AugmentOptions, BatchAugment
from clusterkit.data.samples import ImageSet
from clusterkit.engine import EpochContext, FitContext, Phase, Trainer, all_gather_with_grad, resolve_device
from clusterkit.engine.distributed import shard
from clusterkit.engine.optim import ClippedAdam
from clusterkit.engine.predict import predict_batches
from clusterkit.engine.seeding import derived_seed
from clusterkit.features.backbones import FEATURE_MAP_BACKBONES, feature_map_trunk
from clusterkit.losses import (
    expected_agreement_loss,
    mean_prediction_entropy,
    pairwise_relation_loss,
    prior_targets,
    probability_bce,
)
from clusterkit.methods.base import ClusterMethod, load_net, net_state
from clusterkit.methods.registry import register
from clusterkit.nn.attention import GaussianAttention
from clusterkit.nn.batchnorm import recompute_batchnorm
from clusterkit.nn.heads import label_head
from clusterkit.nn.pretrained import PretrainedBackbone
from clusterkit.nn.vgg import VGGBackbone

VGG = "vgg"  # the paper's backbone, trained from scratch


@dataclass
class GATClusterConfig(AugmentOptions):
    """Defaults from the official code's STL-10 config unless docs/methods.md says otherwise: epochs,
    repeats and width are ours, sized for a CPU budget of minutes (the official run is 6,000 outer
    iterations of 8 passes on a GPU). Augmentation ranges follow torchvision's conventions. The
    pretrained backbones (`backbone_name` other than vgg) are ours: the paper trains from scratch."""

    epochs: int = option(
        150, "outer iterations: one big batch each, step 1 targets then step 2 sub-batch passes", low=1
    )
    big_batch: int = option(1000, "B, images per outer iteration", low=1)
    batch_size: int = option(32, "images per optimizer step in step 2", low=1)
    repeats: int = option(
        1, "passes of step 2 over the big batch (official 8; ours 1: more outer iterations instead)", low=1
    )
    lr: float = option(1e-3, "Adam learning rate", low=0, low_open=True)
    grad_clip: float = option(
        0.0,
        "each gradient element is clipped to +-grad_clip before every Adam step; 0 (the official code since 6ab2e18) turns it off",
        low=0,
    )
    width: int = option(32, "channels of the first VGG block (doubled per block); half the official width", low=1)
    convs_per_block: int = option(3, "conv layers per VGG block", low=1)
    feature_dim: int = option(
        10, "channels of the backbone's final feature map (official STL-10 fea_dim since 51b292c)", low=1
    )
    # Not `backbone`: fit reads that key as --backbone, the features that kmeans, spectral and gmm cluster.
    backbone_name: str = option(
        VGG,
        "vgg (trained from scratch, as the paper) or a pretrained backbone's feature map",
        choices=(VGG, *FEATURE_MAP_BACKBONES),
    )
    backbone_weights: str | None = option(
        None, "a pretrained backbone's weights: a local file or weights name; null: its default local weights"
    )
    freeze_backbone: bool = option(
        False, "keep a pretrained backbone fixed (eval mode, no gradients); false fine-tunes it with the rest"
    )
    backbone_size: int = option(
        64, "side the images are resized to (bilinear, on the device) for a pretrained backbone", low=32
    )
    attention_lambda: float = option(
        0.05, "scales the width of the Gaussian attention mask (official `lamda`)", low=0, low_open=True
    )
    weight_similarity: float = option(5.0, "weight of the similarity (augmentation agreement) loss", low=0)
    weight_entropy: float = option(3.0, "weight of the cluster-balance entropy loss", low=0)
    weight_relation: float = option(1.0, "weight of the pairwise relation loss", low=0)
    weight_attention: float = option(5.0, "weight of the attention branch's loss", low=0)
    kmeans_restarts: int = option(20, "k-means restarts for the relation pseudo-labels", low=1)
    min_cluster_ratio: float = option(
        0.1, "relation labels are dropped when a k-means cluster holds fewer than this x B / k images", low=0, high=1
    )
    grayscale: bool = option(True, "train on luminance, as the official code does for every data set")
    precise_bn: bool = option(
        True, "set BatchNorm statistics on the clean images before each step 1 and after training"
    )
    mixed_precision: bool = option(
        True, "bf16 autocast on CUDA (fp16 with loss scaling without bf16); CPU runs float32"
    )

    rules = (*AugmentOptions.rules, Rule("batch_size", "<=", "big_batch"))
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The official STL-10 run: niuchuangnn/GATCluster @ cf0e20f (HEAD, the code of the released
        # model), configs/stl10/gatcluster.py unless another file is named; docs/methods.md, GATCluster.
        "paper": {
            # :18 `max_iters = 6000` outer iterations (one big batch each: build_data_loader.py:61, :77)
            "epochs": 6000,
            # :8 `batch_size = 1000` (B, `ims_per_batch`)
            "big_batch": 1000,
            # :11 `train_sub_batch_size = 32`
            "batch_size": 32,
            # :13 `num_repeat = 8` passes of step 2 (training.py:158)
            "repeats": 8,
            # :139 `base_lr=0.001` (Adam, weight_decay 0)
            "lr": 1e-3,
            # training.py:211: `clip_grad_value_(..., 10)` commented out since 6ab2e18 (clipped at 0f5967e)
            "grad_clip": 0.0,
            # :50 `conv_layers=[[64, 64, 64], ..., [128, 128, 128], ..., [256, 256, 256], ...]`
            "width": 64,
            "convs_per_block": 3,
            # :14 `fea_dim = 10`, since 51b292c (32 at 0f5967e)
            "feature_dim": 10,
            # STL-10 at its own 96 px: `stl10_gray` resizes nothing (deepcluster/data/bulid_data.py:44-66;
            # datasets/stl10.py:161 reads 96 x 96); smaller images keep their size
            "max_image_size": 96,
        },
    }


OFFICIAL_MAP_CELLS = 36  # the official STL-10 network's final map: 96 px, unpadded convs -> 6x6


def to_network_input(x: torch.Tensor, grayscale: bool) -> torch.Tensor:
    """RGB -> luminance when the network trains on grayscale (the official code's `*_gray` data sets)."""
    return TF.rgb_to_grayscale(x) if grayscale and x.shape[1] == 3 else x


def build_backbone(
    in_channels: int, image_size: tuple[int, int], config: GATClusterConfig, pretrained: bool
) -> VGGBackbone | PretrainedBackbone:
    """The VGG net of the paper, or `config.backbone_name`'s pretrained trunk (which takes 1 or 3 channels
    at any size). `pretrained=False` builds the trunk's architecture without reading its weights:
    a fitted model's checkpoint holds them."""
    if config.backbone_name == VGG:
        width = config.width
        return VGGBackbone(
            in_channels,
            image_size,
            widths=(width, 2 * width, 4 * width),
            convs_per_block=config.convs_per_block,
            out_dim=config.feature_dim,
        )
    trunk = feature_map_trunk(config.backbone_name, config.backbone_weights, pretrained=pretrained)
    return PretrainedBackbone(
        trunk.net, trunk.mean, trunk.std, config.backbone_size, config.feature_dim, frozen=config.freeze_backbone
    )


class GATClusterNet(nn.Module):
    """Images -> (p_ori, p_att): label distributions of the global branch (average-pooled map) and of
    the Gaussian-attention branch. Clusters are the argmax of p_ori."""

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        k: int,
        config: GATClusterConfig,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(in_channels, image_size, config, pretrained)
        dim = config.feature_dim
        self.project = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim))
        self.classify = label_head(dim, k)
        # The attended sum on the official 6x6 map's scale (OFFICIAL_MAP_CELLS), whatever our map's size.
        self.attention = GaussianAttention(
            dim, self.backbone.map_size, hidden=k, lam=config.attention_lambda, cells=OFFICIAL_MAP_CELLS
        )
        self.classify_attended = label_head(dim, k)

    def forward(self, x: torch.Tensor, attention: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.backbone(x)
        projected = self.project(features)
        probs = self.classify(projected.mean(dim=(2, 3)))
        if not attention:
            return probs, None
        attended, _, _ = self.attention(features, projected)
        return probs, self.classify_attended(attended)

    def attention_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (N, h, w) and their parameters (N, 3) = (mu_row, mu_col, sigma)."""
        features = self.backbone(x)
        _, mask, theta = self.attention(features, self.project(features))
        return mask, theta


@dataclass
class SubBatch:
    """One step-2 optimizer step: augmented images and their slices of the step-1 targets."""

    x: torch.Tensor
    similarity_target: torch.Tensor
    attention_target: torch.Tensor
    relation: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


def big_batch_indices(n: int, big_batch: int, epoch: int, seed: int) -> torch.Tensor:
    """The images of outer iteration `epoch`. As with the official data loader (shuffle=True, batch
    B), each pass over the data set is one fresh permutation cut into consecutive big batches, so
    every image is drawn equally often; here the cut is into ceil(n / B) near-equal parts (at most B
    images each), so that no part is a tiny remainder."""
    parts = -(-n // big_batch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, epoch // parts)))
    return torch.tensor_split(order, parts)[epoch % parts]


def relation_labels(
    attention_target: np.ndarray, k: int, restarts: int, min_ratio: float, seed: int
) -> np.ndarray | None:
    """Same-cluster pseudo-labels from k-means on the attention targets (the official code's relation
    target), or None when a cluster is nearly empty (fewer than min_ratio * B / k images): then only
    each image with itself counts as a positive pair."""
    from sklearn.cluster import KMeans

    labels = KMeans(n_clusters=k, n_init=restarts, random_state=seed).fit_predict(attention_target.astype(np.float64))
    counts = np.bincount(labels, minlength=k)
    return None if counts.min() < min_ratio * len(labels) / k else labels


class TwoStepSchedule:
    """GATCluster's outer iteration as the engine's epoch: `batches` runs step 1 (targets for a big
    batch, no gradients, clean images) and then yields step 2's augmented sub-batches; `loss` scores
    one sub-batch. Only one sub-batch is ever on the device with gradients, whatever B is."""

    def __init__(self, net: GATClusterNet, trainer: Trainer, config: GATClusterConfig, k: int) -> None:
        self.net = net
        self.trainer = trainer
        self.config = config
        self.k = k
        self.augment = BatchAugment(config.augment_policy())

    def _clean_inputs(self, index: torch.Tensor, chunk: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(index), chunk):
            yield to_network_input(self.trainer.data.batch(index[start : start + chunk]).x, self.config.grayscale)

    @torch.no_grad()
    def predict(self, index: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """p_ori of the clean images `index` in eval mode (BatchNorm running statistics), on the CPU."""
        was_training = self.net.training
        self.net.eval()
        with self.trainer.precision.autocast():
            out = [self.net(x, attention=False)[0].float().cpu() for x in self._clean_inputs(index, chunk)]
        self.net.train(was_training)
        return torch.cat(out)

    def recompute_statistics(self, index: torch.Tensor, chunk: int = 256) -> None:
        """BatchNorm statistics of the current weights on the clean images `index` (see departures in
        docs/methods.md): the running averages mix past weights and augmented views, and step 1's
        targets are the network's own eval-mode predictions on clean images."""
        with self.trainer.precision.autocast():
            recompute_batchnorm(self.net, self._clean_inputs(index, chunk))

    def batches(self, ctx: EpochContext) -> Iterator[SubBatch]:
        cfg = self.config
        generator = torch.Generator().manual_seed(ctx.seed)
        chosen = big_batch_indices(len(self.trainer.data), cfg.big_batch, ctx.epoch, self.trainer.seed)
        # Step 1: every rank computes the same targets (same big batch, same k-means seed).
        if cfg.precise_bn:
            self.recompute_statistics(chosen)
        probs = self.predict(chosen)
        similarity_target = prior_targets(probs, power=1.0, freq_exponent=1.0)
        attention_target = prior_targets(probs, power=2.0, freq_exponent=1.0)
        labels = relation_labels(
            attention_target.numpy(), self.k, cfg.kmeans_restarts, cfg.min_cluster_ratio, ctx.seed % 2**31
        )
        labels_t = None if labels is None else torch.from_numpy(labels)
        # Step 2: `repeats` shuffled passes over the big batch, one augmented view per image.
        self.net.train()
        device = self.trainer.device
        per_step = min(cfg.batch_size, len(chosen))
        for _ in range(cfg.repeats):
            order = torch.randperm(len(chosen), generator=generator)
            for start in range(0, len(chosen) - per_step + 1, per_step):
                rows = shard(order[start : start + per_step], self.trainer.env)
                x = self.augment(self.trainer.data.batch(chosen[rows]).x, generator)
                if labels_t is None:
                    relation = torch.eye(len(rows))
                else:
                    relation = (labels_t[rows, None] == labels_t[None, rows]).float()
                yield SubBatch(
                    x=to_network_input(x, self.config.grayscale),
                    similarity_target=similarity_target[rows].to(device),
                    attention_target=attention_target[rows].to(device),
                    relation=relation.to(device),
                )

    def loss(self, module: nn.Module, batch: SubBatch) -> dict[str, torch.Tensor]:
        cfg = self.config
        probs, probs_att = module(batch.x)
        similarity = expected_agreement_loss(probs.float(), batch.similarity_target)
        # Entropy of the mean over the global sub-batch (all ranks), as a single process would see it.
        entropy = -(
            mean_prediction_entropy(all_gather_with_grad(probs.float()))
            + mean_prediction_entropy(all_gather_with_grad(probs_att.float()))
        )
        relation = pairwise_relation_loss(probs, batch.relation)
        attention = probability_bce(probs_att, batch.attention_target)
        total = (
            cfg.weight_similarity * similarity
            + cfg.weight_entropy * entropy
            + cfg.weight_relation * relation
            + cfg.weight_attention * attention
        )
        return {
            "loss": total,
            "similarity": similarity,
            "entropy": entropy,
            "relation": relation,
            "attention": attention,
        }


@register
class GATCluster(ClusterMethod):
    name = "gatcluster"
    description = (
        "GATCluster (ECCV 2020): Gaussian-attention convnet with a softmax label layer, four self-learning tasks"
    )
    uses_engine = True
    Config = GATClusterConfig

    def _input_channels(self) -> int:
        return 1 if self.config.grayscale else self.input_shape_[0]

    def _build(self, pretrained: bool = True) -> GATClusterNet:
        return GATClusterNet(
            self._input_channels(), tuple(self.input_shape_[1:]), int(self.k_), self.config, pretrained=pretrained
        )

    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        trainer = Trainer(
            images,
            seed=self.seed,
            device=self.device,
            context=context,
            fingerprint=self.resume_fingerprint(),
            mixed_precision=cfg.mixed_precision,
        )
        self.device_ = str(trainer.device)
        self.net_ = self._build()  # after the Trainer: it seeds the generators that initialise weights
        schedule = TwoStepSchedule(self.net_, trainer, cfg, int(self.k_))
        everything = torch.arange(len(images))
        phase = Phase(
            name="gatcluster",
            epochs=cfg.epochs,
            loss=schedule.loss,
            optimizer=lambda params: ClippedAdam(params, lr=cfg.lr, clip=cfg.grad_clip),
            batch_size=cfg.batch_size,
            batches=schedule.batches,
            assign=lambda: schedule.predict(everything).argmax(dim=1).numpy(),
        )
        trainer.fit(self.net_, [phase])
        if cfg.precise_bn:  # the final predictions, too, with the final weights' statistics on clean images
            schedule.recompute_statistics(everything)
        self.net_.cpu().eval()

    @torch.no_grad()
    def _predict_proba(self, images: ImageSet) -> np.ndarray:
        """p_ori, the global branch's label distribution (no k-means afterwards)."""

        def global_branch(x: torch.Tensor) -> torch.Tensor:
            return self.net_(to_network_input(x, self.config.grayscale), attention=False)[0].float()

        return predict_batches(
            self.net_, global_branch, images.pixels, self.predict_batch_size, resolve_device(self.device)
        )

    def _embedding(self, images: ImageSet) -> np.ndarray:
        """The global branch's pooled feature map, the vector its label head reads."""

        def pooled(x: torch.Tensor) -> torch.Tensor:
            return self.net_.project(self.net_.backbone(to_network_input(x, self.config.grayscale))).mean(dim=(2, 3))

        return predict_batches(
            self.net_, pooled, images.pixels, self.predict_batch_size, resolve_device(self.device)
        ).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return net_state(self.net_)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net_ = load_net(self._build(pretrained=False), state)  # every weight, the trunk's too
