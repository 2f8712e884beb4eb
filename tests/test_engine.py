"""The training engine: devices, sharding, history, checkpoints, resume, determinism, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from clusterkit.data import load_images
from clusterkit.engine import Phase, Trainer, resolve_device
from clusterkit.engine.context import FitContext
from clusterkit.engine.distributed import DistEnv, shard
from clusterkit.errors import InputError, TrainingDiverged
from clusterkit.losses import prior_targets, soft_cross_entropy
from clusterkit.outputs.run import STATE_NAME

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_images("builtin:digits")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="--device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda:0")


def test_shard_pads_equally_and_covers_everything():
    index = torch.arange(10)
    parts = [shard(index, DistEnv(rank, rank, 3)) for rank in range(3)]
    assert {len(p) for p in parts} == {4}
    assert set(torch.cat(parts).tolist()) == set(range(10))
    # Round-robin order is what unshard undoes: row j of rank r is item j * world + r.
    assert torch.stack(parts, dim=1).reshape(-1)[:10].tolist() == list(range(10))


class _Toy(nn.Module):
    """A tiny dropout autoencoder + head: random enough to catch RNG state mistakes."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(64, 8)
        self.dec = nn.Linear(8, 64)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.tanh(self.enc(nn.functional.dropout(x.flatten(1), 0.2, training=True)))
        return self.head(z), self.dec(z)


class _ToyMethod:
    """A method in miniature: two phases, per-epoch targets as extra state, an interrupt hook."""

    def __init__(self, images, run_dir: Path | None, resume: bool = False, interrupt_at: int | None = None) -> None:
        self.images, self.interrupt_at = images, interrupt_at
        self.trainer = Trainer(
            images,
            seed=3,
            device="cpu",
            context=FitContext(run_dir, resume),
            fingerprint={"method": "toy"},
            extra_state=self,
        )
        self.net = _Toy()
        self.q = torch.zeros(0)

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q = state["q"]

    def _targets(self, ctx=None) -> None:
        if ctx is not None and self.interrupt_at is not None and ctx.epoch + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        probs = self.trainer.infer(lambda x: torch.softmax(self.net.head(torch.tanh(self.net.enc(x.flatten(1)))), 1))
        self.q = prior_targets(probs)

    def _loss(self, module, batch) -> dict[str, torch.Tensor]:
        logits, recon = module(batch.x)
        rec = nn.functional.mse_loss(recon, batch.x.flatten(1))
        clus = soft_cross_entropy(logits, self.q[batch.index])
        return {"loss": rec + clus, "reconstruction": rec, "clustering": clus}

    def fit(self) -> np.ndarray:
        adam = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
        sgd = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9)  # noqa: E731
        self.trainer.fit(
            self.net,
            [
                Phase(
                    "pretrain",
                    2,
                    lambda m, b: {"loss": nn.functional.mse_loss(m(b.x)[1], b.x.flatten(1))},
                    adam,
                    batch_size=256,
                ),
                Phase(
                    "cluster",
                    4,
                    self._loss,
                    sgd,
                    batch_size=128,
                    on_start=self._targets,
                    on_epoch_end=self._targets,
                    assign=lambda: self.q.argmax(1).numpy(),
                    scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, 0.5),
                ),
            ],
        )
        with torch.no_grad():
            return self.net.head(torch.tanh(self.net.enc(torch.from_numpy(self.images.flat())))).argmax(1).numpy()


def test_trainer_writes_history_and_a_weights_only_checkpoint(digits, tmp_path):
    _ToyMethod(digits, tmp_path).fit()
    records = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in records] == [("pretrain", 1), ("pretrain", 2)] + [
        ("cluster", e) for e in range(1, 5)
    ]
    assert {"acc", "nmi", "ari", "reconstruction", "clustering", "images_per_s"} <= set(records[-1])
    state = torch.load(tmp_path / STATE_NAME, weights_only=True)
    assert (state["phase"], state["epoch"], state["history_lines"]) == (1, 4, 6)


def test_same_seed_same_assignments(digits):
    assert np.array_equal(_ToyMethod(digits, None).fit(), _ToyMethod(digits, None).fit())


def test_interrupted_and_resumed_equals_uninterrupted(digits, tmp_path):
    straight = _ToyMethod(digits, tmp_path / "straight").fit()
    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        _ToyMethod(digits, run, interrupt_at=3).fit()
    assert torch.load(run / STATE_NAME, weights_only=True)["epoch"] == 2
    resumed = _ToyMethod(digits, run, resume=True).fit()
    assert np.array_equal(straight, resumed)
    assert _same_history(run, tmp_path / "straight")


def _same_history(a: Path, b: Path) -> bool:
    """History equal except for the measured speed."""

    def load(path: Path) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in json.loads(line).items() if k != "images_per_s"}
            for line in (path / "history.jsonl").read_text().splitlines()
        ]

    return load(a) == load(b)


@pytest.mark.parametrize(("bad", "limit"), [(float("nan"), None), (1e12, 1e8)])
def test_a_diverged_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(digits, tmp_path, bad, limit):
    """Step 3 of epoch 2 returns a NaN (or, with max_loss, a loss beyond it): the run stops there
    with the step and the checkpoint in one message, the weights saved after epoch 1 untouched."""
    trainer = Trainer(digits, seed=0, device="cpu", context=FitContext(tmp_path), fingerprint={"method": "toy"})
    steps = []

    def loss(module, batch):
        steps.append(1)
        value = nn.functional.mse_loss(module(batch.x)[1], batch.x.flatten(1))
        return {"loss": value * bad if len(steps) == 8 + 3 else value}  # 1797 / 256 -> 8 steps an epoch

    model = _Toy()
    with pytest.raises(TrainingDiverged, match=r"toy epoch 2 step 3: .*last good checkpoint is .*train_state"):
        trainer.fit(model, [Phase("toy", 5, loss, lambda p: torch.optim.Adam(p), batch_size=256, max_loss=limit)])
    state = torch.load(tmp_path / STATE_NAME, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(value).all() for value in state["model"].values())


def test_resume_refuses_other_settings_and_missing_state(digits, tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        _ToyMethod(digits, tmp_path, resume=True).fit()
    _ToyMethod(digits, tmp_path).fit()
    trainer = Trainer(digits, seed=3, device="cpu", context=FitContext(tmp_path, True), fingerprint={"method": "other"})
    with pytest.raises(InputError, match="settings differ"):
        trainer.fit(_Toy(), [])
    other_images = digits.subset(np.arange(len(digits))[::-1])  # same count and shape, other order
    trainer = Trainer(
        other_images, seed=3, device="cpu", context=FitContext(tmp_path, True), fingerprint={"method": "toy"}
    )
    with pytest.raises(InputError, match="image_digest"):
        trainer.fit(_Toy(), [])


_DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from clusterkit.data import load_images
    from clusterkit.engine import all_gather_with_grad
    from clusterkit.engine.context import FitContext
    from clusterkit.methods.registry import get_method_class

    torch.set_num_threads(1)
    run, out = sys.argv[1], sys.argv[2]
    images = load_images("builtin:digits")
    model = get_method_class("depict")(k=10, seed=0, device="cpu", pretrain_epochs=2, init_epochs=1, epochs=2,
                                       feature_maps=8)
    model.fit(images, FitContext(run_dir=run))
    rank, world = dist.get_rank(), dist.get_world_size()
    x = torch.tensor([rank + 1.0], requires_grad=True)
    (all_gather_with_grad(x) ** 2).sum().backward()
    # Every rank's loss is the global one; the backward sums them: world * dL/dx.
    assert torch.allclose(x.grad, world * 2 * x.detach()), x.grad
    np.save(f"{out}/pred{rank}.npy", model.predict(images))
    """
)


def test_torchrun_two_processes_gloo(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(_DISTRIBUTED_SCRIPT)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(run),
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.array_equal(np.load(tmp_path / "pred0.npy"), np.load(tmp_path / "pred1.npy"))
    assert len(np.load(tmp_path / "pred0.npy")) == 1797
    assert len((run / "history.jsonl").read_text().splitlines()) == 5
    state = torch.load(run / STATE_NAME, weights_only=True)
    assert len(state["rng"]) == 2 and state["epoch"] == 2
