"""Shared loss terms, as small pure functions of tensors (one job each).

Functions that need statistics of the whole batch take the predictions of every rank: pass them
through `clusterkit.engine.all_gather_with_grad` first under torchrun.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

_EPS = 1e-12


def prior_targets(probs: torch.Tensor, power: float = 2.0, freq_exponent: float = 1.0) -> torch.Tensor:
    """Targets q_ik ∝ p_ik^power / f_k^freq_exponent, rows summing to one, f_k = Σ_i p_ik.

    Dividing by the soft cluster frequencies f_k discourages empty and giant clusters; the power
    sharpens. (2, 1) is DEC's and the released DEPICT code's p²/f; (1, 0.5) is DEPICT's paper, p/√f.
    Pass the predictions of all images (or of the global batch under torchrun).
    """
    q = probs.pow(power) / probs.sum(dim=0, keepdim=True).clamp_min(_EPS).pow(freq_exponent)
    return q / q.sum(dim=1, keepdim=True).clamp_min(_EPS)


def frequency_prior_objective(probs: torch.Tensor, power: float = 2.0, freq_exponent: float = 1.0) -> float:
    """DEPICT's clustering objective KL(Q‖P) + KL(f‖u) for predictions P (all images), Q their
    `prior_targets` and f = mean_i q_i the cluster frequencies, u uniform. Lower: P already close to
    its own sharpened targets (confident) and clusters of even size."""
    probs = probs.double().clamp_min(_EPS)
    q = prior_targets(probs, power, freq_exponent).clamp_min(_EPS)
    fit = (q * (q.log() - probs.log())).sum(dim=1).mean()
    f = q.mean(dim=0)
    return float(fit + (f * (f * len(f)).log()).sum())


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of −Σ_k q_k log softmax(logits)_k: KL(q‖p) up to q's constant entropy."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def layerwise_reconstruction(
    reconstructions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], weights: Sequence[float]
) -> torch.Tensor:
    """Σ_l w_l · mean squared error of layer l; targets are treated as constants."""
    return sum(w * F.mse_loss(r, t.detach()) for r, t, w in zip(reconstructions, targets, weights, strict=True))


def mean_prediction_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the batch-mean label distribution: log K at balanced clusters, 0 when every
    image goes to one cluster. Maximizing it rules out the trivial one-cluster solution."""
    mean = probs.mean(dim=0).clamp_min(_EPS)
    return -(mean * mean.log()).sum()


def expected_agreement_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−mean_i Σ_k p_ik q_ik: lowest when each prediction puts its mass where its target does."""
    return -(probs * targets).sum(dim=1).mean()


def probability_bce(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between probabilities and soft targets, element-wise mean: torch's own,
    in float32 with autocast off around it (CUDA autocast refuses it). It clamps the log at -100,
    not the probability, and its gradient (p - t) / max(p (1 - p), 1e-12) stays non-zero on a
    saturated wrong prediction: clamping p to [1e-7, 1 - 1e-7] would silence the relation and
    attention losses exactly where they should undo a merge or a split."""
    with torch.autocast(probs.device.type, enabled=False):
        return F.binary_cross_entropy(probs.float(), targets.float())


def pairwise_relation_loss(probs: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
    """BCE between the cosine similarity of two images' label distributions (in [0, 1] for
    probabilities) and a 0/1 same-cluster target, over the pairs i <= j."""
    unit = probs.float() / probs.float().norm(dim=1, keepdim=True).clamp_min(1e-5)
    rows, cols = torch.tril_indices(len(probs), len(probs), device=probs.device)
    similarity = (unit[rows] * unit[cols]).sum(dim=1).clamp(0, 1)
    return probability_bce(similarity, relation[rows, cols])


def uniform_prior_loss(logits: torch.Tensor) -> torch.Tensor:
    """GEDI's uniformity term −Σ_y log p̄_y, p̄ = mean_i softmax(logits_i): at least c·log c, with
    equality exactly when the batch-mean assignment is uniform, so it penalises cluster collapse
    (CPLearn `solo/losses/gedi_nogen.py` L40-41). Pass the logits of the global batch."""
    mean = F.softmax(logits.float(), dim=1).mean(dim=0)
    return -mean.clamp_min(_EPS).log().sum()


def view_invariance_loss(logits: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """GEDI's invariance term: mean_i of the cross-entropy of view 1's prediction under view 2's,
    −Σ_y softmax(other_i)_y log softmax(logits_i)_y, with gradients through both views (no
    stop-gradient; CPLearn `gedi_nogen.py` L43-44)."""
    return -(F.softmax(other.float(), dim=1) * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def contrastive_divergence(data_energy: torch.Tensor, sample_energy: torch.Tensor) -> torch.Tensor:
    """mean E(data) − mean E(samples): the gradient of the negative log-likelihood of an
    energy-based model, with samples from the model standing in for its partition function (JEM
    `train_wrn_ebm.py` L313-330). Samples must come in detached."""
    return data_energy.float().mean() - sample_energy.float().mean()


@torch.no_grad()
def sinkhorn_codes(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """SwAV's codes: the soft assignment Q of B samples to K prototypes that spreads the batch equally
    over the prototypes (rows of Q^T sum to 1/K, columns to 1/B), found by `iterations` rounds of
    Sinkhorn-Knopp on exp(scores / epsilon) and returned with rows summing to one (SwAV
    `main_swav.py` `distributed_sinkhorn`). Full precision: exp(1/0.05) overflows half. Pass the
    scores of the global batch under torchrun; no gradient flows through codes."""
    q = torch.exp(scores.float() / epsilon).t()  # K x B
    n_prototypes, n_samples = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * n_prototypes
        q /= q.sum(dim=0, keepdim=True) * n_samples
    return (q * n_samples).t()


def swapped_prediction_loss(scores: Sequence[torch.Tensor], temperature: float = 0.1, **sinkhorn) -> torch.Tensor:
    """SwAV's loss over V views of one batch: each view's codes (`sinkhorn_codes` of its prototype
    scores, no gradient) are predicted from every other view's scores, −Σ_k q_k log softmax(s/τ)_k,
    averaged over the predicting views and then over the coded views (`main_swav.py` L300-325,
    every view coded as in SwAV's two-crop setting)."""
    if len(scores) < 2:
        raise ValueError("the swapped prediction needs at least two views")
    total = scores[0].new_zeros((), dtype=torch.float32)
    for coded, view in enumerate(scores):
        codes = sinkhorn_codes(view, **sinkhorn)
        others = [s for index, s in enumerate(scores) if index != coded]
        total = total + sum(soft_cross_entropy(s.float() / temperature, codes) for s in others) / len(others)
    return total / len(scores)
