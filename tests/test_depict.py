"""DEPICT on the built-in digits: learns, round-trips through model.ckpt, resumes exactly."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from clusterkit.algorithms.path_integral import path_integral_clustering
from clusterkit.data import ImageSet, load_images
from clusterkit.engine.context import FitContext
from clusterkit.errors import InputError
from clusterkit.methods.depict import Depict, DepictConfig, DepictSchedule, initial_clusters, initial_objective
from clusterkit.methods.factory import load_model
from clusterkit.metrics import cluster_acc
from clusterkit.nn.autoencoder import ConvAutoencoder

# A reduced schedule for tests; the defaults and their sources: docs/methods.md.
FAST = {"pretrain_epochs": 2, "init_epochs": 1, "epochs": 3, "feature_maps": 16, "init": "kmeans", "kmeans_n_init": 2}


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    return load_images("builtin:digits")


@pytest.fixture(scope="module")
def fitted(digits) -> Depict:
    torch.set_num_threads(1)
    return Depict(k=10, seed=0, device="cpu", pretrain_epochs=80, init_epochs=5, epochs=10, feature_maps=16).fit(digits)


def test_learns_well_above_chance(fitted, digits):
    assert cluster_acc(digits.labels, fitted.predict(digits)) > 0.5


def test_predict_proba_rows_sum_to_one(fitted, digits):
    proba = fitted.predict_proba(digits)
    assert proba.shape == (len(digits), 10)
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_checkpoint_round_trip_reproduces_predictions(fitted, digits, tmp_path):
    fitted.save(tmp_path / "model.ckpt")
    torch.load(tmp_path / "model.ckpt", weights_only=True)
    loaded = load_model(tmp_path / "model.ckpt")
    assert np.allclose(loaded.predict_proba(digits), fitted.predict_proba(digits), atol=1e-6)


def test_same_seed_same_assignments(digits):
    first = Depict(k=10, seed=1, device="cpu", **FAST).fit(digits).predict(digits)
    second = Depict(k=10, seed=1, device="cpu", **FAST).fit(digits).predict(digits)
    assert np.array_equal(first, second)


def test_interrupted_and_resumed_equals_uninterrupted(digits, tmp_path, monkeypatch):
    straight = Depict(k=10, seed=2, device="cpu", **FAST).fit(digits, FitContext(tmp_path / "a")).predict(digits)
    update = DepictSchedule.update_targets

    def interrupt_after_second_epoch(self, ctx):
        if ctx.epoch == 1:
            raise KeyboardInterrupt
        return update(self, ctx)

    monkeypatch.setattr(DepictSchedule, "update_targets", interrupt_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        Depict(k=10, seed=2, device="cpu", **FAST).fit(digits, FitContext(tmp_path / "b"))
    monkeypatch.setattr(DepictSchedule, "update_targets", update)
    resumed = Depict(k=10, seed=2, device="cpu", **FAST).fit(digits, FitContext(tmp_path / "b", resume=True))
    assert np.array_equal(straight, resumed.predict(digits))


def test_pretraining_stops_after_patience_and_keeps_the_best_weights(digits, tmp_path, monkeypatch):
    """The released code's rule: stop `pretrain_patience` epochs after the last new low of the
    held-out error, and cluster with the weights that reached it, not the last ones."""
    errors = iter([1.0, 0.5, 0.7, 0.6, 0.9, 0.4])
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def scripted_error(self):
        error = next(errors)
        if error == 0.5:
            seen["best"] = {k: v.clone() for k, v in self.net.autoencoder.state_dict().items()}
        return error

    init_head = DepictSchedule.init_head

    def capture_then_init(self):
        seen["at_init"] = {k: v.clone() for k, v in self.net.autoencoder.state_dict().items()}
        init_head(self)

    monkeypatch.setattr(DepictSchedule, "holdout_error", scripted_error)
    monkeypatch.setattr(DepictSchedule, "init_head", capture_then_init)
    options = {**FAST, "pretrain_epochs": 20, "pretrain_patience": 3}
    Depict(k=10, seed=0, device="cpu", **options).fit(digits, FitContext(tmp_path))
    pretrain_epochs = [line for line in (tmp_path / "history.jsonl").read_text().splitlines() if '"pretrain"' in line]
    assert len(pretrain_epochs) == 5  # best at epoch 2, three epochs without a lower error
    assert all(torch.equal(seen["best"][k], seen["at_init"][k]) for k in seen["best"])


def test_warmup_stops_after_patience_on_the_held_out_nmi_and_keeps_the_best_weights(digits, tmp_path, monkeypatch):
    """The released code's warm-up rule (functions.py:767-808): the head's initial weights score
    0.3 (epoch 0); epochs 1-5 score 0.2, 0.6, 0.5, 0.55, 0.4: the best is epoch 2, and with
    patience 3 the warm-up ends after epoch 5, going on from epoch 2's weights. It reads the
    initial clusters only: no ground truth is passed to the fit."""
    agreements = iter([0.3, 0.2, 0.6, 0.5, 0.55, 0.4, 0.1, 0.1])
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def scripted(self):
        value = next(agreements)
        if value == 0.6:
            seen["best"] = {k: v.clone() for k, v in self.net.state_dict().items()}
        return value

    set_targets = DepictSchedule.set_targets

    def capture_then_targets(self):  # the cluster phase's first targets (later calls: its own epochs)
        seen.setdefault("at_cluster", {k: v.clone() for k, v in self.net.state_dict().items()})
        set_targets(self)

    monkeypatch.setattr(DepictSchedule, "holdout_agreement", scripted)
    monkeypatch.setattr(DepictSchedule, "set_targets", capture_then_targets)
    unlabelled = ImageSet(paths=digits.paths, pixels=digits.pixels)
    options = {**FAST, "init_epochs": 20, "init_patience": 3, "epochs": 1}
    Depict(k=10, seed=0, device="cpu", **options).fit(unlabelled, FitContext(tmp_path))
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len([line for line in lines if '"init"' in line]) == 5
    assert all(torch.equal(seen["best"][k], seen["at_cluster"][k]) for k in seen["best"])


def _assert_kept_where_the_objective_stopped_falling(steps: list[dict]) -> None:
    """The folding rule: each try raises min_size; the objective falls strictly up to the one kept
    partition, and the try after it (if any) did not fall, so the kept one is the lowest tried."""
    sizes = [step["min_size"] for step in steps]
    assert all(a < b for a, b in itertools.pairwise(sizes)), sizes
    (kept,) = [i for i, step in enumerate(steps) if step["kept"]]
    objectives = [step["objective"] for step in steps]
    assert all(a > b for a, b in itertools.pairwise(objectives[: kept + 1])), objectives
    assert kept == len(steps) - 1 or not objectives[kept + 1] < objectives[kept], objectives
    assert objectives[kept] == min(objectives), objectives


def test_pic_init_folds_outlier_groups_while_depicts_objective_falls(digits):
    """The digits' pixels as a stand-in embedding: the kept partition has the lowest objective of
    those tried, below plain AC-PIC's, no outlier cluster, and a better ACC; the steps are recorded."""
    x = digits.flat().astype(np.float64)
    labels, steps = initial_clusters(x, DepictConfig(pic_fold_outliers=True), 10, 0)
    assert len(steps) >= 3
    _assert_kept_where_the_objective_stopped_falling(steps)
    chosen = initial_objective(torch.from_numpy(x), labels, 10, DepictConfig().target)
    assert chosen == min(step["objective"] for step in steps) < steps[0]["objective"]
    assert [step["objective"] for step in steps if step["kept"]] == [chosen]
    plain = path_integral_clustering(x, 10)
    assert np.bincount(labels).min() > np.bincount(plain).min()
    assert cluster_acc(digits.labels, labels) > cluster_acc(digits.labels, plain)
    unfolded, unfolded_steps = initial_clusters(x, DepictConfig(pic_fold_outliers=False), 10, 0)
    assert np.array_equal(unfolded, plain)
    assert [step["kept"] for step in unfolded_steps] == [True]


def test_fit_info_reports_the_initial_clustering_steps(fitted):
    steps = fitted.fit_info()["init_selection"]
    assert all(np.isfinite(step["objective"]) for step in steps)
    _assert_kept_where_the_objective_stopped_falling(steps)


def test_spectral_init_partitions_without_outlier_clusters(digits):
    """`init=spectral` on the digits' pixels as a stand-in embedding: a fair partition and no cluster
    of a few outliers (AC-PIC leaves one of 27 images here, see docs/methods.md)."""
    labels, steps = initial_clusters(digits.flat().astype(np.float64), DepictConfig(init="spectral"), 10, 0)
    assert steps == []
    assert cluster_acc(digits.labels, labels) > 0.85
    assert np.bincount(labels, minlength=10).min() > len(digits) / 10 / 2


def test_input_size_and_channels_come_from_the_data():
    for shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 17, 23)]:
        ae = ConvAutoencoder(shape[0], shape[1:], embed_dim=10)
        x = torch.rand(2, *shape)
        recon = ae.decode(ae.encode(x, noisy=True).embedding)
        assert [r.shape[1:] for r in recon] == [x.shape[1:], *[h.shape[1:] for h in ae.encode(x).hidden]]


def test_bad_options_and_tiny_images_are_input_errors(digits):
    with pytest.raises(InputError, match="dropout"):
        Depict(k=10, dropout=1.5)
    tiny = ImageSet(paths=["a", "b", "c"], pixels=np.arange(12, dtype=np.uint8).reshape(3, 1, 2, 2))  # 3 distinct
    with pytest.raises(InputError, match="too small"):
        Depict(k=2, device="cpu", **FAST).fit(tiny)


def test_a_cluster_that_self_training_empties_is_refilled(digits, monkeypatch):
    """The warm-up is given no image of cluster 0, so self-training starts with it empty; without the
    refill at the end of training it stays empty, and metrics.json's fit_info says what was refilled."""

    def without_cluster_zero(embeddings, config, k, seed):
        labels, steps = initial_clusters(embeddings, config, k, seed)
        labels[labels == 0] = 1
        return labels, steps

    monkeypatch.setattr("clusterkit.methods.depict.initial_clusters", without_cluster_zero)
    model = Depict(k=10, seed=0, device="cpu", **FAST).fit(digits)
    refilled = model.predict(digits)
    assert len(np.unique(refilled)) == 10
    refills = model.fit_info()["empty_clusters_refilled"]
    assert refills and all(r["images"] >= 1 for r in refills)
    monkeypatch.setattr("clusterkit.methods.depict.plan_splits", lambda *args, **kwargs: [])
    plain = Depict(k=10, seed=0, device="cpu", **FAST).fit(digits).predict(digits)
    assert len(np.unique(plain)) < 10
    donors = [r["donor"] for r in refills]
    untouched = ~np.isin(plain, donors)  # images of clusters that gave none away keep their cluster
    assert np.array_equal(refilled[untouched], plain[untouched])
    assert np.isin(refilled[~untouched], donors + [r["cluster"] for r in refills]).all()
