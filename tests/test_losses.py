"""Losses and targets (clusterkit.losses) on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from clusterkit.losses import (
    expected_agreement_loss,
    mean_prediction_entropy,
    pairwise_relation_loss,
    prior_targets,
    probability_bce,
    soft_cross_entropy,
)


def test_mean_entropy_is_maximal_at_uniform():
    k = 10
    uniform = torch.full((6, k), 1 / k)
    assert mean_prediction_entropy(uniform).item() == pytest.approx(math.log(k), abs=1e-5)
    balanced_one_hot = torch.eye(k)  # confident and balanced: also maximal
    assert mean_prediction_entropy(balanced_one_hot).item() == pytest.approx(math.log(k), abs=1e-5)
    collapsed = torch.eye(k)[[3] * 6]
    assert mean_prediction_entropy(collapsed).item() == pytest.approx(0.0, abs=1e-5)
    skewed = torch.softmax(torch.randn(6, k), dim=1)
    assert mean_prediction_entropy(skewed) < math.log(k)


def test_targets_balance_and_sharpen():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    similarity = prior_targets(probs, power=1.0, freq_exponent=1.0)
    attention = prior_targets(probs, power=2.0, freq_exponent=1.0)
    assert torch.allclose(similarity.sum(1), torch.ones(3)) and torch.allclose(attention.sum(1), torch.ones(3))
    # Dividing by the big cluster's frequency moves mass towards the small one...
    assert (similarity[:, 1] > probs[:, 1]).all()
    # ...and squaring sharpens relative to the balanced target.
    assert attention[0, 0] > similarity[0, 0]
    # A milder frequency discount (DEPICT's square root) still balances.
    milder = prior_targets(probs, power=1.0, freq_exponent=0.5)
    assert torch.allclose(milder.sum(1), torch.ones(3)) and milder[2, 1] > probs[2, 1]


def test_soft_cross_entropy_of_a_distribution_with_itself_is_its_entropy():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    entropy = -(probs * probs.log()).sum(dim=1).mean()
    assert torch.allclose(soft_cross_entropy(probs.log(), probs), entropy)


def test_agreement_and_bce_on_hand_made_cases():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_agreement_loss(target, target).item() == pytest.approx(-1.0)
    assert expected_agreement_loss(target.flip(1), target).item() == pytest.approx(0.0)
    assert probability_bce(torch.tensor([0.5]), torch.tensor([1.0])).item() == pytest.approx(math.log(2), abs=1e-6)
    assert probability_bce(target, target).item() < 1e-5


def test_relation_loss_rewards_matching_pairs():
    probs = torch.tensor([[0.98, 0.01, 0.01], [0.97, 0.02, 0.01], [0.01, 0.01, 0.98]])
    same = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    wrong = torch.eye(3)
    assert pairwise_relation_loss(probs, same) < 0.1 < pairwise_relation_loss(probs, wrong)


@pytest.mark.parametrize("p, t", [(1e-9, 1.0), (1.0 - 1e-8, 0.0), (0.0, 1.0)])
def test_bce_still_pulls_on_a_saturated_wrong_prediction(p, t):
    """A confident wrong prediction (p far past the 1e-7 a probability clamp would stop at) gets a
    finite gradient towards the target: clamping p would have given exactly zero."""
    probs = torch.tensor([p], requires_grad=True)
    probability_bce(probs, torch.tensor([t])).backward()
    grad = probs.grad.item()
    assert math.isfinite(grad) and grad != 0.0
    assert (grad < 0) == (t == 1.0)  # gradient descent moves p towards t


def test_relation_loss_pulls_apart_two_confident_near_identical_predictions_of_different_clusters():
    """Cosine similarity 1 - 2e-7 of two images that the target says differ: past the 1 - 1e-7 that
    a probability clamp would stop at, so that only the log-space BCE still separates them."""
    logits = torch.tensor([[8.0, 0.0, 0.0], [8.0, 1.0, 0.0]], requires_grad=True)
    pairwise_relation_loss(logits.softmax(dim=1), torch.eye(2)).backward()
    assert logits.grad.abs().sum() > 0
