"""DEPICT: deep embedded regularized clustering (Ghasedi Dizaji et al., ICCV 2017).

A denoising convolutional autoencoder whose K-dimensional embedding feeds a softmax clustering
head. Phases, as in the authors' released code: "pretrain" (layer-wise reconstruction only);
"init" (the clean embeddings are clustered with AC-PIC, its outlier groups folded in while DEPICT's
objective falls, or with spectral clustering of their kNN graph, or k-means; the head starts from
the unit-norm centroids and the network briefly fits those hard clusters); "cluster" (targets Q,
the clean predictions sharpened and divided by the soft cluster frequencies, and all weights are
updated alternately: each epoch trains the noisy path's prediction towards Q plus the
reconstruction, then Q is recomputed, until Q stops changing). Equations, defaults and their
sources: docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clusterkit import console
from clusterkit.algorithms.path_integral import PathIntegralClustering
from clusterkit.algorithms.refill import plan_splits
from clusterkit.algorithms.spectral import knn_affinity, partition, spectral_embedding
from clusterkit.config import MethodConfig, option
from clusterkit.data.samples import ImageSet
from clusterkit.engine import Batch, EpochContext, FitContext, Phase, Trainer, resolve_device
from clusterkit.engine.predict import predict_batches
from clusterkit.errors import InputError
from clusterkit.losses import frequency_prior_objective, layerwise_reconstruction, prior_targets, soft_cross_entropy
from clusterkit.methods.base import ClusterMethod, load_net, net_state
from clusterkit.methods.registry import register
from clusterkit.metrics import nmi
from clusterkit.nn.autoencoder import ConvAutoencoder
from clusterkit.nn.heads import predicted_clusters, split_linear_head

# Target forms: (power, frequency exponent) of q ∝ p^power / f^exponent.
_TARGETS = {"squared": (2.0, 1.0), "sqrt": (1.0, 0.5)}


@dataclass
class DepictConfig(MethodConfig):
    """Defaults follow the authors' released code (herandy/DEPICT) unless docs/methods.md says otherwise."""

    epochs: int = option(50, "cap on the cluster phase, which ends earlier once the targets Q converge (tol)", low=0)
    pretrain_epochs: int = option(
        600, "cap on autoencoder pretraining (reconstruction only), early-stopped on the holdout", low=0
    )
    holdout: float = option(
        0.1,
        "share of images left out of pretraining to early-stop it; 0 turns early stopping off",
        low=0,
        high=0.5,
        high_open=True,
    )
    pretrain_patience: int = option(
        100, "pretraining stops this many epochs after the held-out error's last new low", low=1
    )
    init: Literal["pic", "spectral", "kmeans"] = option(
        "pic",
        "how the clean embeddings are first clustered: AC-PIC, spectral clustering of their kNN graph, or k-means",
    )
    init_epochs: int = option(
        1000, "cap on the warm-up fitting the head to the initial hard clusters, early-stopped on the holdout", low=0
    )
    init_patience: int = option(
        6, "the warm-up stops this many epochs after the held-out NMI with the initial clusters last rose", low=1
    )
    spectral_neighbors: int = option(10, "kNN graph degree with init=spectral", low=1)
    pic_neighbors: int = option(20, "kNN digraph degree of AC-PIC (init=pic)", low=1)
    pic_fold_outliers: bool = option(
        False, "fold AC-PIC's small outlier groups in while DEPICT's objective falls (ours; off: the released AC-PIC)"
    )
    batch_size: int = option(100, "images per optimizer step", low=1)
    lr: float = option(1e-4, "Adam learning rate of pretraining", low=0, low_open=True)
    cluster_lr: float = option(1e-4, "Adam learning rate of the init and cluster phases", low=0, low_open=True)
    feature_maps: int = option(50, "feature maps of each encoder conv layer", low=1)
    dropout: float = option(
        0.1, "dropout on the input and the first conv layer of the noisy pass", low=0, high=1, high_open=True
    )
    hidden_weight: float = option(
        0.1, "weight of the hidden layers' reconstruction errors (the input's weighs 1)", low=0
    )
    reconstruction_weight: float = option(1.0, "weight of the reconstruction loss in the joint objective", low=0)
    cluster_weight: float = option(1.0, "weight of the clustering cross-entropy in the joint objective", low=0)
    target: Literal["squared", "sqrt"] = option(
        "squared", "target form: released code's p^2/f (DEC's) or the paper's p/sqrt(f)"
    )
    target_update_interval: int = option(1, "epochs between recomputations of the targets Q", low=1)
    tol: float = option(1e-7, "clustering stops when the mean squared change of Q falls below this", low=0)
    kmeans_n_init: int = option(
        40, "k-means++ restarts (init=kmeans, spectral's embedding, empty-cluster splits)", low=1
    )
    mixed_precision: bool = option(True, "CUDA autocast (bf16, else fp16 with loss scaling); CPU runs stay float32")

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The released code's schedule: herandy/DEPICT @ e75840d (DEPICT.py, functions.py).
        "paper": {
            # DEPICT.py:40 `--num_epochs 4000`: train_depict's `for epoch in range(num_epochs)` (functions.py:840)
            "epochs": 4000,
            # the same 4000 in train_depict_ae's `for epoch in range(num_epochs + 1)` (functions.py:582): 4001 epochs
            "pretrain_epochs": 4001,
            # functions.py:607 `if last_update > 100: break`: the 101st epoch without a new held-out low
            "pretrain_patience": 101,
            # functions.py:566 `train_test_split(..., test_size=0.10)` (stratified there, random here)
            "holdout": 0.1,
            # DEPICT.py:38 `--batch_size 100`
            "batch_size": 100,
            # DEPICT.py:39 `--learning_rate 1e-4`, pretraining's Adam (functions.py:562)
            "lr": 1e-4,
            # the same learning rate for the warm-up and the clustering Adam (functions.py:733, :740)
            "cluster_lr": 1e-4,
            # functions.py:876 `mean_squared_error(y_prob, y_prob_prev) < 1e-7`
            "tol": 1e-7,
            # the warm-up: `for epoch in range(1000)` with `if last_update > 5: break` (functions.py:767, :808)
            "init_epochs": 1000,
            "init_patience": 6,
            # plain AC-PIC (functions.py:633-692): no outlier folding
            "pic_fold_outliers": False,
        },
    }


class DepictNet(nn.Module):
    """Autoencoder + softmax head; `forward` is the noisy (dropout) path that training updates."""

    def __init__(self, in_channels: int, size: tuple[int, int], k: int, config: DepictConfig) -> None:
        super().__init__()
        self.autoencoder = ConvAutoencoder(
            in_channels,
            size,
            embed_dim=k,
            channels=(config.feature_maps, config.feature_maps),
            dropouts=(config.dropout, config.dropout, 0.0),
        )
        self.head = nn.Linear(k, k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Noisy logits and reconstructions of [input, hidden...]."""
        encoded = self.autoencoder.encode(x, noisy=True)
        return self.head(encoded.embedding), self.autoencoder.decode(encoded.embedding)

    def clean_probs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.autoencoder.encode(x).embedding).float(), dim=1)


class _Reconstructor(nn.Module):
    """The autoencoder's noisy pass as one forward, so pretraining can be wrapped by DDP."""

    def __init__(self, autoencoder: ConvAutoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.autoencoder.decode(self.autoencoder.encode(x, noisy=True).embedding)


class TrainingState:
    """DEPICT's training state besides the weights, saved and restored with the engine's checkpoint
    (`extra_state`): the best pretraining weights so far and their held-out error, the initial hard
    clusters and how they were chosen (`init_selection`), the current targets Q and the clean
    predictions behind them. Row-indexed tensors live on the training `device` (losses index them)."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.best_error = float("inf")
        self.best_epoch = 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.initial: torch.Tensor | None = None
        self.q: torch.Tensor | None = None
        self.probs: torch.Tensor | None = None
        self.init_selection: list[dict[str, float | bool]] = []
        self.warmup_best_nmi = -1.0
        self.warmup_best_epoch = 0
        self.warmup_best_weights: dict[str, torch.Tensor] | None = None

    def keep_best(self, error: float, epoch: int, weights: dict[str, torch.Tensor]) -> None:
        self.best_error, self.best_epoch = error, epoch
        self.best_weights = {k: v.detach().cpu().clone() for k, v in weights.items()}

    def keep_best_warmup(self, nmi: float, epoch: int, weights: dict[str, torch.Tensor]) -> None:
        self.warmup_best_nmi, self.warmup_best_epoch = nmi, epoch
        self.warmup_best_weights = {k: v.detach().cpu().clone() for k, v in weights.items()}

    def set_initial(self, labels: torch.Tensor) -> None:
        self.initial = labels.to(self.device)

    def set_targets(self, probs: torch.Tensor, q: torch.Tensor) -> None:
        self.probs, self.q = probs, q.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
        return {
            "initial": cpu(self.initial),
            "q": cpu(self.q),
            "probs": self.probs,
            "best_error": self.best_error,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "init_selection": self.init_selection,
            "warmup_best_nmi": self.warmup_best_nmi,
            "warmup_best_epoch": self.warmup_best_epoch,
            "warmup_best_weights": self.warmup_best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_error, self.best_epoch = state["best_error"], state["best_epoch"]
        self.best_weights = state["best_weights"]
        self.init_selection = state["init_selection"]
        self.warmup_best_nmi, self.warmup_best_epoch = state["warmup_best_nmi"], state["warmup_best_epoch"]
        self.warmup_best_weights = state["warmup_best_weights"]
        if state["initial"] is not None:
            self.set_initial(state["initial"])
        if state["q"] is not None:
            self.set_targets(state["probs"], state["q"])


def _scaled(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> [-1, 1], the range of the decoder's tanh output (as the released code)."""
    return x * 2.0 - 1.0


def holdout_split(n: int, holdout: float, seed: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(training rows, held-out rows): a seeded random `holdout` share of the images that pretraining
    does not train on, only scores (no labels, so unlike the released code not stratified); (None,
    None): no held-out set."""
    n_holdout = int(holdout * n)
    if n_holdout < 1:
        return None, None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_holdout:].sort().values, order[:n_holdout].sort().values


def head_rows(embeddings: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The clusters' unit-norm centroids, one row per cluster (the head's initial weights)."""
    centroids = torch.zeros(k, embeddings.shape[1], dtype=torch.float64)
    centroids.index_add_(0, labels, embeddings)
    centroids /= torch.bincount(labels, minlength=k).clamp_min(1).unsqueeze(1)
    return centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)


def initial_objective(embeddings: torch.Tensor, labels: np.ndarray, k: int, target: str) -> float:
    """DEPICT's objective KL(Q‖P) + KL(f‖u) for the head that `labels` would start from."""
    rows = head_rows(embeddings, torch.from_numpy(labels.astype(np.int64)), k)
    power, exponent = _TARGETS[target]
    return frequency_prior_objective(torch.softmax(embeddings @ rows.T, dim=1), power, exponent)


def path_integral_clusters(
    embeddings: np.ndarray, config: DepictConfig, k: int
) -> tuple[np.ndarray, list[dict[str, float | bool]]]:
    """AC-PIC; with `pic_fold_outliers`, AC-PIC again with `min_size` one above the last kept
    partition's smallest cluster, kept while that lowers DEPICT's objective at the start of
    training, and while min_size stays within an even split's cluster size n/k. Returns the kept
    partition and the steps tried (min_size, objective, kept)."""
    n, as_tensor = len(embeddings), torch.from_numpy(embeddings)
    min_size, kept = 1, 0  # kept: the index of the partition kept among those tried
    pic = PathIntegralClustering(embeddings, k, n_neighbors=config.pic_neighbors)  # one graph for every run
    labels = pic.merge(min_size)
    objective = initial_objective(as_tensor, labels, k, config.target)
    steps: list[dict[str, float | bool]] = [{"min_size": min_size, "objective": objective, "kept": False}]
    while config.pic_fold_outliers:
        min_size = int(np.bincount(labels, minlength=k).min()) + 1
        if min_size > n // k:
            break
        candidate = pic.merge(min_size)
        candidate_objective = initial_objective(as_tensor, candidate, k, config.target)
        steps.append({"min_size": min_size, "objective": candidate_objective, "kept": False})
        if not candidate_objective < objective:  # not lower (or NaN): stop
            break
        labels, objective, kept = candidate, candidate_objective, len(steps) - 1
    steps[kept]["kept"] = True
    if len(steps) > 1:
        tried = ", ".join(f"{s['min_size']}: {s['objective']:.5f}" for s in steps)
        console.info(
            f"init: AC-PIC minimum cluster sizes tried (size: DEPICT objective) {tried}; kept {steps[kept]['min_size']}"
        )
    return labels, steps


def initial_clusters(
    embeddings: np.ndarray, config: DepictConfig, k: int, seed: int
) -> tuple[np.ndarray, list[dict[str, float | bool]]]:
    """The partition self-training starts from, which it sharpens but rarely changes (docs/methods.md),
    and how it was chosen: AC-PIC's steps tried (init=pic), else no steps."""
    if config.init == "spectral":
        affinity = knn_affinity(embeddings.astype(np.float32), config.spectral_neighbors)
        vectors, _ = spectral_embedding(affinity, k, seed=seed)
        return partition(vectors, k, config.kmeans_n_init, seed), []
    if config.init == "pic":
        return path_integral_clusters(embeddings, config, k)
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=config.kmeans_n_init, random_state=seed).fit_predict(embeddings), []


class DepictSchedule:
    """DEPICT's training as the engine's phases: owns the trainer, the config, the pretraining row
    split, the layer weights of the reconstruction and the training `state` (the trainer's
    `extra_state`); its bound methods are the phases' losses, batches and hooks."""

    def __init__(
        self,
        net: DepictNet,
        trainer: Trainer,
        config: DepictConfig,
        k: int,
        seed: int,
        state: TrainingState,
        eval_batch_size: int = 256,
    ) -> None:
        self.net = net
        self.trainer = trainer
        self.config = config
        self.k = k
        self.seed = seed
        self.state = state
        self.state.device = trainer.device
        self.eval_batch_size = eval_batch_size
        self.train_rows, self.holdout_rows = holdout_split(len(trainer.data), config.holdout, seed)
        self.layer_weights = (1.0, config.hidden_weight, config.hidden_weight)

    # --- pretrain ---------------------------------------------------------------------------------
    def pretrain_batches(self, ctx: EpochContext) -> Iterator[Batch]:
        return ctx.shuffled(self.config.batch_size, self.train_rows)

    @torch.no_grad()
    def holdout_error(self) -> float:
        """Clean (no dropout) layer-wise reconstruction error on the held-out images, their mean.
        Every rank computes it whole (the set is small), so all ranks stop at the same epoch."""
        data, total, autoencoder = self.trainer.data, 0.0, self.net.autoencoder
        for start in range(0, len(self.holdout_rows), self.eval_batch_size):
            rows = self.holdout_rows[start : start + self.eval_batch_size]
            x = _scaled(data.batch(rows).x)
            encoded = autoencoder.encode(x)
            error = layerwise_reconstruction(
                autoencoder.decode(encoded.embedding), [x, *encoded.hidden], self.layer_weights
            )
            total += float(error) * len(rows)
        return total / len(self.holdout_rows)

    def early_stop(self, ctx: EpochContext) -> bool:
        """The released code's stopping rule: end pretraining `pretrain_patience` epochs after the last
        new low of the held-out error, and go on from the weights that reached it."""
        if self.holdout_rows is None:
            return False
        state, error = self.state, self.holdout_error()
        if error < state.best_error:
            state.keep_best(error, ctx.epoch + 1, self.net.autoencoder.state_dict())
        stop = ctx.epoch + 1 - state.best_epoch >= self.config.pretrain_patience
        if (stop or ctx.epoch + 1 == self.config.pretrain_epochs) and state.best_weights is not None:
            self.net.autoencoder.load_state_dict(state.best_weights)
            console.info(
                f"pretrain: held-out error {state.best_error:.5f} at epoch {state.best_epoch}, weights restored"
            )
        return stop

    # --- losses -----------------------------------------------------------------------------------
    def _reconstruction(self, recon: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            clean = self.net.autoencoder.encode(x)
        return layerwise_reconstruction(recon, [x, *clean.hidden], self.layer_weights)

    def reconstruction_loss(self, module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        x = _scaled(batch.x)
        loss = self._reconstruction(module(x), x)
        return {"loss": loss}

    def joint_loss(self, module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """Reconstruction + cross-entropy of the noisy prediction against the soft targets Q."""
        return self._combined(module, batch, lambda logits: soft_cross_entropy(logits, self.state.q[batch.index]))

    def initial_loss(self, module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """As the joint loss, against the initial hard clusters (the released code's warm-up)."""
        return self._combined(module, batch, lambda logits: F.cross_entropy(logits, self.state.initial[batch.index]))

    def _combined(self, module: nn.Module, batch: Batch, clustering_loss) -> dict[str, torch.Tensor]:
        cfg = self.config
        x = _scaled(batch.x)
        logits, recon = module(x)
        reconstruction = self._reconstruction(recon, x)
        clustering = clustering_loss(logits.float())
        loss = cfg.reconstruction_weight * reconstruction + cfg.cluster_weight * clustering
        return {"loss": loss, "reconstruction": reconstruction, "clustering": clustering}

    # --- init & cluster ---------------------------------------------------------------------------
    def embeddings(self, autocast: bool = True) -> torch.Tensor:
        """The clean embeddings of all images (what the head reads), float64 on the CPU."""
        encode = lambda x: self.net.autoencoder.encode(_scaled(x)).embedding  # noqa: E731
        return self.trainer.infer(encode, autocast=autocast).double()

    def init_head(self) -> None:
        """Cluster the clean embeddings (AC-PIC, spectral or k-means); head weights = their unit-norm
        centroids. In full precision, as the refill: under CUDA autocast the bf16 tanh outputs move
        AC-PIC's partition (review 2026-12, 1.3). The warm-up's early stop starts from these weights."""
        embeddings = self.embeddings(autocast=False)
        labels, self.state.init_selection = initial_clusters(embeddings.numpy(), self.config, self.k, self.seed)
        labels = torch.from_numpy(labels.astype(np.int64))
        with torch.no_grad():
            self.net.head.weight.copy_(head_rows(embeddings, labels, self.k))
            self.net.head.bias.zero_()
        self.state.set_initial(labels)
        if self.holdout_rows is not None:
            self.state.keep_best_warmup(self.holdout_agreement(), 0, self.net.state_dict())

    def warmup_batches(self, ctx: EpochContext) -> Iterator[Batch]:
        """The warm-up trains on the pretraining rows only; the held-out rows judge when it stops."""
        return ctx.shuffled(self.config.batch_size, self.train_rows)

    @torch.no_grad()
    def holdout_agreement(self) -> float:
        """NMI between the clean predictions of the held-out images and their initial clusters: how
        well the head has learned the initial partition beyond the images it trains on. It reads
        no ground truth (the released code's `val_nmi`, functions.py:764, :783)."""
        rows, size = self.holdout_rows, self.eval_batch_size
        predicted = [
            self.net.clean_probs(_scaled(self.trainer.data.batch(rows[i : i + size]).x)).argmax(dim=1).cpu()
            for i in range(0, len(rows), size)
        ]
        initial = self.state.initial[rows.to(self.state.device)].cpu().numpy()
        return nmi(initial, torch.cat(predicted).numpy())

    def warmup_stop(self, ctx: EpochContext) -> bool:
        """The released code's warm-up rule (herandy/DEPICT @ e75840d, functions.py:767-808): after
        each epoch, keep the weights with the highest held-out NMI so far (the head's initial ones
        count as epoch 0); stop `init_patience` epochs after the last rise (`last_update > 5`: 6),
        or at the cap, and go on from the best weights."""
        if self.holdout_rows is None:
            return False
        state, agreement = self.state, self.holdout_agreement()
        if agreement > state.warmup_best_nmi:
            state.keep_best_warmup(agreement, ctx.epoch + 1, self.net.state_dict())
        stop = ctx.epoch + 1 - state.warmup_best_epoch >= self.config.init_patience
        if (stop or ctx.epoch + 1 == self.config.init_epochs) and state.warmup_best_weights is not None:
            self.net.load_state_dict(state.warmup_best_weights)
            console.info(
                f"init: held-out NMI with the initial clusters {state.warmup_best_nmi:.4f} at epoch "
                f"{state.warmup_best_epoch}, weights restored"
            )
        return stop

    def predictions(self) -> np.ndarray:
        """The clean predictions' clusters, for the history's scores during the warm-up."""
        return self.trainer.infer(lambda x: self.net.clean_probs(_scaled(x))).argmax(dim=1).numpy()

    def set_targets(self) -> None:
        probs = self.trainer.infer(lambda x: self.net.clean_probs(_scaled(x)))
        power, exponent = _TARGETS[self.config.target]
        self.state.set_targets(probs, prior_targets(probs.double(), power, exponent).float())

    def update_targets(self, ctx: EpochContext) -> bool:
        """The alternating step: recompute Q every `target_update_interval` epochs; True when Q has
        stopped changing (mean squared change below `tol`, as the released code)."""
        if (ctx.epoch + 1) % self.config.target_update_interval:
            return False
        previous = self.state.q
        self.set_targets()
        change = torch.mean((self.state.q - previous) ** 2).item()
        return change < self.config.tol

    def assignments(self) -> np.ndarray:
        """Clusters at the last target update (the clean predictions), for the history's scores."""
        return self.state.probs.argmax(dim=1).numpy()

    # --- after training ---------------------------------------------------------------------------
    def fill_empty_clusters(self) -> list[dict[str, int]]:
        """After training, each cluster that no clean prediction holds takes the smaller 2-means half
        of the largest, through the head (`split_linear_head`), so the model gives the k clusters asked
        for; returns the refills (cluster, donor, images moved). Only here: a cluster that empties
        during self-training often comes back by the frequency prior, and splitting then cost
        accuracy (docs/methods.md). In full precision, as `predict` computes, so that the split
        found is the one the saved model gives."""
        refilled: list[dict[str, int]] = []
        embeddings = self.embeddings(autocast=False)
        labels = predicted_clusters(self.net.head, embeddings)
        if len(np.unique(labels)) == self.k:
            return refilled
        for split in plan_splits(labels, embeddings.numpy(), self.k, self.seed, self.config.kmeans_n_init):
            moved = split_linear_head(self.net.head, split, embeddings)
            refilled.append({"cluster": split.empty, "donor": split.donor, "images": moved})
            console.info(
                f"cluster: cluster {split.empty} ended empty; it takes {moved} images "
                f"of cluster {split.donor}, the largest"
            )
        return refilled


@register
class Depict(ClusterMethod):
    name = "depict"
    description = "DEPICT: conv autoencoder + softmax head trained on frequency-normalized targets (ICCV 2017)"
    uses_engine = True
    Config = DepictConfig
    config: DepictConfig

    # --- training -------------------------------------------------------------------------------
    def _fit(self, images: ImageSet, context: FitContext) -> None:
        cfg = self.config
        state = TrainingState()
        trainer = Trainer(
            images,
            seed=self.seed,
            device=self.device,
            context=context,
            extra_state=state,
            fingerprint=self.resume_fingerprint(),
            mixed_precision=cfg.mixed_precision,
        )
        self.device_ = str(trainer.device)
        self.net_ = self._build()  # after the Trainer: it seeds the generators that initialise weights
        schedule = DepictSchedule(
            self.net_, trainer, cfg, int(self.k_), self.seed, state, eval_batch_size=self.predict_batch_size
        )
        pretrain = partial(torch.optim.Adam, lr=cfg.lr)
        joint = partial(torch.optim.Adam, lr=cfg.cluster_lr)
        phases = [
            Phase(
                "pretrain",
                cfg.pretrain_epochs,
                schedule.reconstruction_loss,
                pretrain,
                module=_Reconstructor(self.net_.autoencoder),
                batch_size=cfg.batch_size,
                batches=schedule.pretrain_batches,
                on_epoch_end=schedule.early_stop,
            ),
            Phase(
                "init",
                cfg.init_epochs,
                schedule.initial_loss,
                joint,
                module=self.net_,
                batch_size=cfg.batch_size,
                batches=schedule.warmup_batches,
                on_start=schedule.init_head,
                on_epoch_end=schedule.warmup_stop,
                assign=schedule.predictions,
            ),
            Phase(
                "cluster",
                cfg.epochs,
                schedule.joint_loss,
                joint,
                module=self.net_,
                batch_size=cfg.batch_size,
                on_start=schedule.set_targets,
                on_epoch_end=schedule.update_targets,
                assign=schedule.assignments,
            ),
        ]
        trainer.fit(self.net_, phases)
        self.refilled_ = schedule.fill_empty_clusters()
        self.init_selection_ = state.init_selection

    def _build(self) -> DepictNet:
        channels, h, w = self.input_shape_
        try:
            return DepictNet(channels, (h, w), int(self.k_), self.config)
        except ValueError as exc:
            raise InputError(
                f"depict: {exc}; a long thin image is shrunk until its longer side fits max_image_size "
                "(--set max_image_size=N keeps more of it), or --set image_size=N resizes to N x N"
            ) from None

    def fit_info(self) -> dict[str, Any]:
        """For metrics.json: how the initial clusters were chosen, and the clusters that ended empty
        (a model loaded from model.ckpt knows neither)."""
        info: dict[str, Any] = {}
        if self.init_selection_:
            info["init_selection"] = self.init_selection_
        if self.refilled_:
            info["empty_clusters_refilled"] = self.refilled_
        return info

    # --- inference & persistence ------------------------------------------------------------------
    def _predict_proba(self, images: ImageSet) -> np.ndarray:
        probs = predict_batches(
            self.net_,
            lambda x: self.net_.clean_probs(_scaled(x)),
            images.pixels,
            self.predict_batch_size,
            resolve_device(self.device),
        )
        return probs / probs.sum(axis=1, keepdims=True)

    def _embedding(self, images: ImageSet) -> np.ndarray:
        """The clean encoder output, the k-dimensional embedding the softmax head reads."""
        return predict_batches(
            self.net_,
            lambda x: self.net_.autoencoder.encode(_scaled(x)).embedding,
            images.pixels,
            self.predict_batch_size,
            resolve_device(self.device),
        ).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return net_state(self.net_)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net_ = load_net(self._build(), state)
        self.init_selection_, self.refilled_ = [], []  # facts of the fit, not in model.ckpt
