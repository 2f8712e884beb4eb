"""IICC: SwAV's codes and swapped prediction, the engine's per-step hooks, the deformable slice
Transformer, and fits on images, volumes and a mix of both."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clusterkit.data import load_images
from clusterkit.data.builtin import load_builtin
from clusterkit.data.samples import VolumeSet
from clusterkit.engine import Phase, Trainer
from clusterkit.engine.context import FitContext
from clusterkit.engine.optim import warmup_cosine
from clusterkit.errors import InputError
from clusterkit.losses import sinkhorn_codes, swapped_prediction_loss
from clusterkit.methods.factory import create_method, load_model
from clusterkit.nn.deformable import DeformableSliceTransformer, masked_mean

TINY = {
    "epochs": 2,
    "batch_size": 64,
    "volume_batch_size": 8,
    "widths": (8, 8, 8),
    "hidden": 16,
    "projection_dim": 16,
    "token_dim": 16,
    "layers": 1,
    "heads": 2,
}


def test_sinkhorn_codes_spread_a_skewed_batch_equally_over_the_prototypes():
    scores = torch.randn(64, 4) * 0.1
    scores[:, 0] += 0.5  # every sample prefers prototype 0
    codes = sinkhorn_codes(scores, epsilon=0.05, iterations=50)
    assert torch.allclose(codes.sum(dim=1), torch.ones(64), atol=1e-5)
    assert torch.allclose(codes.sum(dim=0), torch.full((4,), 16.0), atol=1e-3)  # B / K each
    assert codes.argmax(1).bincount(minlength=4).min() > 0  # the preference is overruled


def test_swapped_prediction_is_each_views_codes_predicted_from_the_other():
    a, b = torch.randn(32, 5), torch.randn(32, 5)
    by_hand = 0.5 * (
        -(sinkhorn_codes(a) * torch.log_softmax(b / 0.1, 1)).sum(1).mean()
        - (sinkhorn_codes(b) * torch.log_softmax(a / 0.1, 1)).sum(1).mean()
    )
    assert torch.allclose(swapped_prediction_loss([a, b], temperature=0.1), by_hand, atol=1e-5)
    a.requires_grad_(True)
    swapped_prediction_loss([a, b]).backward()
    assert a.grad.abs().sum() > 0  # through the predicting view; codes carry none


def test_warmup_cosine_is_linear_then_a_half_cosine():
    values = [warmup_cosine(step, 100, 10, 1.0, 0.01, start=0.0) for step in range(101)]
    assert values[0] == 0.0 and math.isclose(values[9], 1.0) and math.isclose(values[10], 1.0)
    assert math.isclose(values[55], 0.01 + 0.5 * 0.99, rel_tol=1e-9)
    assert math.isclose(values[100], 0.01)
    assert all(x >= y for x, y in itertools.pairwise(values[10:]))


def test_engine_per_step_hooks_freeze_set_the_rate_and_resume_the_count(tmp_path):
    """Prototype-style freezing: a parameter named by `frozen(step)` stays put on those steps and
    moves after; `lr_schedule` sets the rate each step; the step count survives a resume."""
    images = load_images("builtin:digits")
    seen_lr, seen_steps = [], []
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 3))
    frozen_layer = net[2]
    start_weights = frozen_layer.weight.detach().clone()

    def phase(epochs: int) -> Phase:
        return Phase(
            "hooks",
            epochs,
            lambda m, b: {"loss": m(b.x).pow(2).mean()},
            lambda p: torch.optim.SGD(p, lr=123.0),
            batch_size=256,  # 1797 / 256 -> 8 steps an epoch
            lr_schedule=lambda step: 0.01 * (step + 1),
            frozen=lambda step: list(frozen_layer.parameters()) if step < 8 else [],
            on_step=lambda step: (seen_steps.append(step), seen_lr.append(None)),
        )

    trainer = Trainer(images, seed=0, device="cpu", context=FitContext(tmp_path), fingerprint={"method": "hooks"})
    trainer.fit(net, [phase(1)])
    assert torch.equal(frozen_layer.weight, start_weights)  # frozen through epoch 1 (steps 0..7)
    assert seen_steps == list(range(8))
    resumed = Trainer(images, seed=0, device="cpu", context=FitContext(tmp_path, True), fingerprint={"method": "hooks"})
    optimizers = []
    resumed_phase = phase(2)
    original = resumed_phase.optimizer
    resumed_phase = Phase(
        **{**resumed_phase.__dict__, "optimizer": lambda p: optimizers.append(original(p)) or optimizers[-1]}
    )
    resumed.fit(net, [resumed_phase])
    assert seen_steps[8:] == list(range(8, 16))  # the clock goes on where it stopped
    assert not torch.equal(frozen_layer.weight, start_weights)  # free from step 8
    assert math.isclose(optimizers[-1].param_groups[0]["lr"], 0.01 * 16)


def test_padding_changes_no_valid_slice_of_the_transformer():
    torch.manual_seed(0)
    transformer = DeformableSliceTransformer(16, layers=2, heads=2, points=3, ffn_dim=32, dropout=0.0).eval()
    tokens = torch.randn(1, 5, 16)
    padded = torch.cat([tokens, torch.randn(1, 4, 16) * 100], dim=1)  # garbage past depth 5
    depths = torch.tensor([5])
    with torch.no_grad():
        alone, with_padding = transformer(tokens, depths), transformer(padded, depths)
    assert torch.allclose(alone, with_padding[:, :5], atol=1e-5)
    assert torch.allclose(masked_mean(alone, depths), masked_mean(with_padding, depths), atol=1e-5)


@pytest.fixture(scope="module")
def mixed() -> VolumeSet:
    """60 digit images and 40 digit volumes in one set, as a mixed folder loads."""
    images = VolumeSet.from_images(load_images("builtin:digits", image_size=10).subset(np.arange(60)))
    volumes = load_builtin("digit-volumes").subset(np.arange(0, 300, 300 // 40)[:40])
    voxels = np.zeros((100, 12, 1, 10, 10), dtype=np.uint8)
    voxels[:60, :1] = images.voxels
    voxels[60:] = volumes.voxels
    return VolumeSet(
        paths=images.paths + volumes.paths,
        voxels=voxels,
        depths=np.concatenate([images.depths, volumes.depths]),
        file_kinds=images.file_kinds + volumes.file_kinds,
        labels=images.labels + volumes.labels,
    )


def test_a_mixed_fit_predicts_every_file_and_is_deterministic(mixed, tmp_path):
    first = create_method("iicc", k=4, seed=0, device="cpu", **TINY).fit(mixed)
    second = create_method("iicc", k=4, seed=0, device="cpu", **TINY).fit(mixed)
    proba = first.predict_proba(mixed)
    assert proba.shape == (100, 4) and np.allclose(proba.sum(1), 1.0)
    assert np.array_equal(first.labels_, second.labels_)
    first.save(tmp_path / "model.ckpt")
    loaded = load_model(tmp_path / "model.ckpt")
    assert np.allclose(loaded.predict_proba(mixed), proba, atol=1e-6)


def test_a_model_fitted_on_images_refuses_volumes(mixed):
    model = create_method("iicc", k=4, seed=0, device="cpu", **TINY).fit(mixed.subset(np.arange(60)))
    with pytest.raises(InputError, match="fitted on images only and cannot assign volumes"):
        model.predict_proba(mixed)


def test_cli_fit_on_a_folder_of_images_and_volumes_writes_one_row_per_file(cli, tmp_path, digits_dir):
    from clusterkit.data.builtin_export import export_builtin

    folder = tmp_path / "mixed"
    export_builtin("digit-volumes", tmp_path / "volumes")
    (folder / "scans").mkdir(parents=True)
    (folder / "photos").mkdir()
    for i in range(40):
        name = f"{i * 7:05d}"
        (folder / "scans" / f"{name}.npy").write_bytes((tmp_path / "volumes" / "volumes" / f"{name}.npy").read_bytes())
        (folder / "photos" / f"{name}.png").write_bytes((digits_dir / "images" / f"{name}.png").read_bytes())
    options = [
        item
        for key, value in TINY.items()
        for item in ("--set", f"{key}={list(value) if isinstance(value, tuple) else value}")
    ]
    run = tmp_path / "run"
    result = cli("fit", folder, "--method", "iicc", "--k", "4", "--out", run, "--quiet", *options)
    assert result.code == 0, result.err
    with (run / "assignments.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 80
    assert {row["kind"] for row in rows if row["path"].startswith("scans/")} == {"volume"}
    assert {row["kind"] for row in rows if row["path"].startswith("photos/")} == {"image"}
    again = cli("assign", folder / "scans", "--model", run)
    assert again.code == 0 and len(again.out.splitlines()) == 41


def test_iicc_fit_writes_its_loss_terms_to_history(tmp_path):
    model = create_method("iicc", k=4, seed=0, device="cpu", **TINY)
    model.fit(load_builtin("digit-volumes").subset(np.arange(0, 300, 10)), FitContext(Path(tmp_path)))
    import json

    record = json.loads((tmp_path / "history.jsonl").read_text().splitlines()[-1])
    assert {"intra", "inter", "masked", "loss"} <= set(record)


def _volume_step(seed: int = 0):
    """One training step's batch and net on 40 digit volumes, as the engine would run it."""
    from clusterkit.engine.batches import DeviceData
    from clusterkit.engine.distributed import DistEnv
    from clusterkit.engine.phase import EpochContext
    from clusterkit.methods.iicc import IICCConfig, IICCNet, IICCSchedule, _ImageScores

    torch.manual_seed(seed)
    volumes = load_builtin("digit-volumes").subset(np.arange(0, 300, 300 // 40)[:40])
    config = IICCConfig(**TINY)
    net = IICCNet(1, config, 4).train()
    schedule = IICCSchedule(volumes, config)
    ctx = EpochContext("iicc", 0, seed, DeviceData(volumes.voxels, torch.device("cpu")), DistEnv(0, 0, 1))
    batch = next(b for b in schedule.batches(ctx) if b.volumes is not None)
    return net, schedule, batch, _ImageScores(net), volumes


def test_the_masked_prediction_trains_the_transformer_not_the_tokens():
    """Through the tokens the masked term would make every token alike (a collapse): it must
    reach the Transformer and the mask token only."""
    net, schedule, batch, module, _ = _volume_step()
    schedule.loss(module, batch, net)["masked"].backward()
    assert net.mask_token.grad is not None and net.mask_token.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.transformer.parameters())
    assert net.slice_token.weight.grad is None and all(p.grad is None for p in net.encoder.parameters())


def test_a_volume_starts_as_the_mean_of_its_slices_embeddings():
    """The Transformer's branch starts at zero, so the inter task starts from the slices' 2-D
    semantics rather than from a random volume feature."""
    net, _, _, _, volumes = _volume_step()
    net.eval()
    x = torch.from_numpy(volumes.voxels[:5]).float() / 255
    depths = torch.from_numpy(volumes.depths[:5])
    with torch.no_grad():
        features = net.slices(x)
        expected = torch.nn.functional.normalize(masked_mean(features.embeddings, depths), dim=1)
        assert torch.allclose(net.volume_embedding(features, depths), expected, atol=1e-6)
