"""GEDI: its loss terms and sampler by hand, the toy moons (the sampler lands on the data, the
generative term is what puts it there), exact resume of the chains, and the CLI's sample/--energy."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import make_moons
from sklearn.metrics import roc_auc_score

from clusterkit.data import ImageSet, load_images
from clusterkit.engine.context import FitContext
from clusterkit.losses import contrastive_divergence, uniform_prior_loss, view_invariance_loss
from clusterkit.methods.gedi import GEDI, GEDISchedule
from clusterkit.metrics import cluster_acc
from clusterkit.nn.energy import ReplayBuffer, free_energy, sgld
from clusterkit.outputs.run import STATE_NAME

FAST = {"iterations": 60, "batch_size": 32, "sgld_steps": 3, "buffer_size": 200, "hidden": 32}


def test_uniform_prior_is_c_log_c_at_a_balanced_batch_and_more_when_collapsed():
    """Two images, one sure of cluster 0 and one of cluster 1: the batch mean is (1/2, 1/2), so
    −Σ log p̄ = 2 log 2; both sure of cluster 0 give p̄ ≈ (1, 0) and a term that grows without bound."""
    balanced = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    assert uniform_prior_loss(balanced).item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert uniform_prior_loss(torch.tensor([[50.0, 0.0], [50.0, 0.0]])).item() > 20


def test_free_energy_is_minus_logsumexp():
    """Zero logits over c clusters: E = −log c; adding a to every logit lowers E by a."""
    logits = torch.zeros(3, 4)
    assert torch.allclose(free_energy(logits), torch.full((3,), -math.log(4)))
    assert torch.allclose(free_energy(logits + 2.0), torch.full((3,), -math.log(4) - 2.0))
    assert contrastive_divergence(torch.tensor([1.0, 3.0]), torch.tensor([5.0])).item() == pytest.approx(-3.0)


def test_invariance_passes_gradients_to_both_views():
    """No stop-gradient (GEDI-nogen L43-44): disagreeing views both get a gradient."""
    first = torch.tensor([[2.0, 0.0]], requires_grad=True)
    second = torch.tensor([[0.0, 2.0]], requires_grad=True)
    view_invariance_loss(first, second).backward()
    assert first.grad.abs().sum() > 0 and second.grad.abs().sum() > 0


def test_sgld_without_noise_is_gradient_descent_on_the_energy():
    """E(x) = |x|²/2 has ∇E = x, so each step is x ← (1 − η) x: after t steps x₀ (1 − η)^t."""
    x0 = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    out = sgld(lambda x: 0.5 * (x**2).sum(dim=1), x0, steps=5, step_size=0.1, noise=0.0, generator=torch.Generator())
    assert torch.allclose(out, x0 * 0.9**5)
    assert not out.requires_grad


def test_replay_buffer_restarts_its_share_and_round_trips():
    buffer = ReplayBuffer(50, (1, 2, 2), -1.0, 1.0, reinit=0.0, seed=0)
    assert buffer.chains.dtype == torch.float16 and buffer.chains.abs().max() <= 1
    rows, x = buffer.draw(10, torch.Generator().manual_seed(1))
    assert torch.equal(x, buffer.chains[rows].float())  # no restart: the stored chains
    buffer.update(rows, torch.full_like(x, 3.0))
    assert torch.all(buffer.chains[rows] == 3.0)
    always = ReplayBuffer(50, (1, 2, 2), -1.0, 1.0, reinit=1.0, seed=0)
    always.chains.fill_(3.0)
    _, fresh = always.draw(10, torch.Generator().manual_seed(1))
    assert fresh.abs().max() <= 1  # every chain restarted from U(-1, 1)
    copy = ReplayBuffer(50, (1, 2, 2), -1.0, 1.0, reinit=0.0, seed=5)
    copy.load_state_dict(buffer.state_dict())
    assert torch.equal(copy.chains, buffer.chains)
    with pytest.raises(ValueError, match="replay buffer"):
        ReplayBuffer(50, (1, 3, 3), -1.0, 1.0, 0.0, 0).load_state_dict(buffer.state_dict())


def _moons() -> ImageSet:
    """make_moons as 1x1 'images' of two channels, scaled into [0.1, 0.9] and quantised to uint8."""
    points, labels = make_moons(1000, noise=0.1, random_state=0)
    scaled = 0.1 + 0.8 * (points - points.min(0)) / (points.max(0) - points.min(0))
    pixels = np.round(scaled * 255).astype(np.uint8)[:, :, None, None]
    return ImageSet(paths=[str(i) for i in range(len(pixels))], pixels=pixels, labels=[str(v) for v in labels])


def _distance_to_data(points: np.ndarray, data: np.ndarray) -> float:
    return float(np.sqrt(((points[:, None] - data[None]) ** 2).sum(-1)).min(axis=1).mean())


@pytest.fixture(scope="module")
def moons_fits():
    torch.set_num_threads(1)
    moons = _moons()
    options = {"iterations": 1500, "hidden": 100, "translate": 0.0}
    full = GEDI(k=2, seed=0, device="cpu", **options).fit(moons)
    ablation = GEDI(k=2, seed=0, device="cpu", weight_generative=0.0, **options).fit(moons)
    return moons, full, ablation


def test_toy_moons_samples_land_on_the_data_only_with_the_generative_term(moons_fits):
    """Samples from fresh uniform chains: with the generative term they end on the moons (mean
    distance to the nearest data point well under uniform noise's), without it they do not."""
    moons, full, ablation = moons_fits
    data = moons.as_float().reshape(len(moons), 2)
    noise = np.random.default_rng(0).uniform(0, 1, (400, 2))
    baseline = _distance_to_data(noise, data)
    on_data = _distance_to_data(full.generate(200, 100, seed=0)[0].reshape(-1, 2).numpy(), data)
    without = _distance_to_data(ablation.generate(200, 100, seed=0)[0].reshape(-1, 2).numpy(), data)
    assert on_data < 0.5 * baseline < without


def test_toy_moons_clusters_follow_the_two_shapes(moons_fits):
    moons, full, _ = moons_fits
    assert cluster_acc(moons.labels, full.labels_) > 0.8


def test_energy_is_low_on_the_data_and_high_on_noise(moons_fits):
    """Off the moons: uniform points at least 0.1 from every data point (the moons fill much of
    the unit square, so plain uniform noise is partly on them)."""
    moons, full, _ = moons_fits
    data = moons.as_float().reshape(len(moons), 2)
    points = np.random.default_rng(1).uniform(0, 1, (2000, 2))
    off = points[np.sqrt(((points[:, None] - data[None]) ** 2).sum(-1)).min(axis=1) > 0.1]
    noise = np.round(off * 255).astype(np.uint8)[:, :, None, None]
    outside = ImageSet(paths=[str(i) for i in range(len(noise))], pixels=noise)
    scores = np.concatenate([full.energy(moons), full.energy(outside)])
    assert roc_auc_score(np.r_[np.zeros(len(moons)), np.ones(len(outside))], scores) > 0.8


@pytest.fixture(scope="module")
def small_digits() -> ImageSet:
    return load_images("builtin:digits").subset(np.arange(300))


def test_interrupted_and_resumed_equals_uninterrupted_with_the_same_chains(small_digits, tmp_path, monkeypatch):
    straight = GEDI(k=10, seed=2, device="cpu", **FAST).fit(small_digits, FitContext(tmp_path / "a"))
    batches = GEDISchedule.batches

    def interrupt_in_the_third_epoch(self, ctx):
        if ctx.epoch == 2:
            raise KeyboardInterrupt
        yield from batches(self, ctx)

    monkeypatch.setattr(GEDISchedule, "batches", interrupt_in_the_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        GEDI(k=10, seed=2, device="cpu", **FAST).fit(small_digits, FitContext(tmp_path / "b"))
    assert torch.load(tmp_path / "b" / STATE_NAME, weights_only=True)["epoch"] == 2
    monkeypatch.setattr(GEDISchedule, "batches", batches)
    resumed = GEDI(k=10, seed=2, device="cpu", **FAST).fit(small_digits, FitContext(tmp_path / "b", resume=True))
    assert np.array_equal(straight.predict_proba(small_digits), resumed.predict_proba(small_digits))
    chains = [torch.load(tmp_path / run / STATE_NAME, weights_only=True)["extra"]["chains"] for run in ("a", "b")]
    assert torch.equal(*chains)


def test_history_logs_the_energies_of_data_and_samples(small_digits, tmp_path):
    GEDI(k=10, seed=0, device="cpu", **FAST).fit(small_digits, FitContext(tmp_path))

    record = json.loads((tmp_path / "history.jsonl").read_text().splitlines()[-1])
    assert {"e_data", "e_sample", "generative", "prior", "invariance"} <= set(record)
    assert record["generative"] == pytest.approx(record["e_data"] - record["e_sample"], abs=1e-4)


@pytest.fixture(scope="module")
def gedi_run(tmp_path_factory):
    from clusterkit.workflows.fit import FitRequest, run_fit

    out = tmp_path_factory.mktemp("runs") / "gedi"
    overrides = [f"{key}={value}" for key, value in FAST.items()]
    run_fit(FitRequest(source="builtin:digits", method="gedi", k="10", out=out, overrides=overrides))
    return out


def test_sample_writes_one_row_per_cluster(cli, gedi_run, tmp_path):
    result = cli("sample", gedi_run, "--n", "20", "--steps", "20", "--out", tmp_path / "s.png", "--quiet")
    assert result.code == 0, result.err
    with Image.open(tmp_path / "s.png") as grid:
        width, height = grid.size
    # 10 rows of 2 images of 8 px, 1 px padding around each, enlarged by one integer factor
    assert width * 91 == height * 19


def test_sample_and_energy_refuse_a_model_that_is_not_generative(cli, tmp_path):
    fit = cli("fit", "builtin:digits", "--method", "kmeans", "--k", "3", "--out", tmp_path / "km", "--quiet")
    assert fit.code == 0, fit.err
    for args in (
        ("sample", tmp_path / "km", "--out", tmp_path / "s.png"),
        ("assign", "builtin:digits", "--model", tmp_path / "km", "--energy"),
    ):
        result = cli(*args)
        assert result.code == 2 and "gedi" in result.err and "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1


def test_assign_energy_adds_a_column(cli, gedi_run):
    result = cli("assign", "builtin:digits", "--model", gedi_run, "--energy", "--quiet")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert list(rows[0]) == ["path", "cluster", "confidence", "energy"] and len(rows) == 1797
    assert all(math.isfinite(float(row["energy"])) for row in rows)
