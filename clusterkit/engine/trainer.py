"""The one training loop of every deep method.

The method brings its model and its phases (loss of a batch, hooks); the trainer owns the device,
mixed precision, batching, progress, history, per-epoch checkpoints, resume, Ctrl-C and torchrun.
Build the model after creating the Trainer: the trainer seeds the random generators first.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from clusterkit import console
from clusterkit.data.samples import Samples
from clusterkit.engine.batches import DeviceData
from clusterkit.engine.context import FitContext
from clusterkit.engine.device import resolve_device
from clusterkit.engine.distributed import env_from_os, init_process_group, is_active, unshard
from clusterkit.engine.history import History
from clusterkit.engine.phase import EpochContext, Phase
from clusterkit.engine.precision import Precision
from clusterkit.engine.seeding import capture_rng, derived_seed, restore_rng, seed_everything
from clusterkit.engine.state import load_train_state, save_train_state
from clusterkit.errors import InputError, TrainingDiverged
from clusterkit.metrics import label_scores
from clusterkit.outputs.run import STATE_NAME

# Progress text is refreshed at most this often (reading loss values syncs the GPU).
_REFRESH_S = 0.5


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Trainer:
    """`fit(model, phases)` trains; `infer(fn)` maps every image through `fn` on all ranks.

    `fingerprint` names the settings a resumed run must share with the saved one (method, k,
    config, number of images); `extra_state` is the method's own training state (e.g. targets),
    saved and restored with the checkpoint.
    """

    def __init__(
        self,
        samples: Samples,
        *,
        seed: int,
        device: str = "auto",
        context: FitContext | None = None,
        fingerprint: dict[str, Any] | None = None,
        extra_state: Stateful | None = None,
        mixed_precision: bool = True,
    ) -> None:
        self.env = env_from_os()
        self.device = resolve_device(device, self.env.local_rank)
        init_process_group(self.env, self.device)
        self.seed = seed
        seed_everything(seed + self.env.rank)
        context = context or FitContext()
        self.run_dir = Path(context.run_dir) if context.run_dir is not None else None
        self.resume = context.resume
        if self.resume and self.run_dir is None and self.env.is_main:
            raise ValueError("resuming needs a run folder")
        # A resume must continue on the same images: row-indexed state (targets, clusters) depends on it.
        digest = hashlib.blake2b(np.ascontiguousarray(samples.array).data, digest_size=16).hexdigest()
        self.fingerprint = {**(fingerprint or {}), "n_images": len(samples), "image_digest": digest}
        self.extra_state = extra_state
        self.data = DeviceData(samples.array, self.device)
        self.labels = samples.labels
        self.precision = Precision(self.device, mixed_precision)
        self.history = History(self.run_dir, self.env.is_main)

    # --- public -------------------------------------------------------------------------------
    def fit(self, model: nn.Module, phases: Sequence[Phase]) -> None:
        model.to(self.device)
        saved = self._load(model) if self.resume else None
        self.history.start(saved["history_lines"] if saved else 0)
        first_phase = 0
        if saved is not None:
            _check_epochs_done(phases[saved["phase"]], saved["epoch"])
            first_phase = saved["phase"] + (1 if saved["phase_done"] else 0)
        try:
            for index in range(first_phase, len(phases)):
                resumed = saved if saved is not None and index == saved["phase"] else None
                self._run_phase(model, index, phases[index], resumed)
        except KeyboardInterrupt:
            if self.env.is_main and self.run_dir is not None:
                console.warn(
                    f"interrupted: the checkpoint of the last finished epoch is in {self.run_dir / STATE_NAME}; "
                    "run again with --resume to continue"
                )
            raise

    @torch.no_grad()
    def infer(
        self, fn: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 512, autocast: bool = True
    ) -> torch.Tensor:
        """`fn(x)` for every image (x in [0, 1]), rows in input order, on the CPU. Under torchrun each
        rank computes its shard and all ranks receive every row (padding duplicates dropped).
        `autocast=False`: full precision, as `predict` computes, where a result must agree with it."""
        outputs = []
        with self.precision.autocast() if autocast else contextlib.nullcontext():
            for batch in self.data.ordered(batch_size, self.env):
                outputs.append(fn(batch.x).float())
        return unshard(torch.cat(outputs), len(self.data)).cpu()

    # --- phases ---------------------------------------------------------------------------------
    def _run_phase(self, model: nn.Module, index: int, phase: Phase, resumed: dict[str, Any] | None) -> None:
        module = phase.module if phase.module is not None else model
        if resumed is None and phase.on_start is not None:
            phase.on_start()
        optimizer = phase.optimizer([p for p in module.parameters() if p.requires_grad])
        scheduler = phase.scheduler(optimizer) if phase.scheduler is not None else None
        first_epoch = step = 0
        if resumed is not None:
            optimizer.load_state_dict(resumed["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resumed["scheduler"])
            first_epoch, step = resumed["epoch"], resumed.get("step", 0)
        else:
            self._save(model, index, 0, False, optimizer, scheduler, step)
        wrapped = self._wrap(module)
        start = time.perf_counter()
        with self._progress(phase, first_epoch) as bar:
            for epoch in range(first_epoch, phase.epochs):
                ctx = EpochContext(phase.name, epoch, derived_seed(self.seed, index, epoch), self.data, self.env)
                terms, images_per_s, step = self._train_epoch(ctx, phase, wrapped, optimizer, bar, step)
                converged = bool(phase.on_epoch_end(ctx)) if phase.on_epoch_end is not None else False
                if scheduler is not None:
                    scheduler.step()
                record = {"phase": phase.name, "epoch": epoch + 1, **terms, "images_per_s": round(images_per_s, 1)}
                if self.labels is not None and phase.assign is not None:
                    record.update(label_scores(self.labels, phase.assign()))
                self.history.append(record)
                self._save(model, index, epoch + 1, converged, optimizer, scheduler, step)
                bar.advance(1, **_shown(record))
                if converged:
                    break
        if self.env.is_main:
            console.info(f"{phase.name}: done in {time.perf_counter() - start:.1f} s")

    def _train_epoch(
        self,
        ctx: EpochContext,
        phase: Phase,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        bar: console.ProgressTask,
        step: int,
    ) -> tuple[dict[str, float], float, int]:
        """One epoch's optimizer steps; `step` counts the phase's steps before it (the per-step
        hooks' clock), and the count after it is returned."""
        batches = phase.batches(ctx) if phase.batches is not None else ctx.shuffled(phase.batch_size)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # a term that only some steps return is averaged over those steps
        steps = images = 0
        start = last_refresh = time.perf_counter()
        for batch in batches:
            if phase.lr_schedule is not None:
                for group in optimizer.param_groups:
                    group["lr"] = phase.lr_schedule(step)
            if phase.on_step is not None:
                phase.on_step(step)
            with self.precision.autocast():
                terms = phase.loss(module, batch)
            self._check_diverged(phase, ctx, steps + 1, terms["loss"])
            self.precision.step(terms["loss"], optimizer, phase.frozen(step) if phase.frozen is not None else ())
            step += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
                counts[key] = counts.get(key, 0) + 1
            steps += 1
            images += len(batch)
            now = time.perf_counter()
            if now - last_refresh > _REFRESH_S:
                last_refresh = now
                bar.advance(0, epoch=ctx.epoch + 1, **{k: (v / counts[k]).item() for k, v in sums.items()})
        if steps == 0:
            raise ValueError(f"phase {phase.name!r} produced no batches")
        means = torch.stack([sums[key] / counts[key] for key in sorted(sums)])
        if is_active():
            dist.all_reduce(means)
            means /= self.env.world_size
            images *= self.env.world_size
        terms = dict(zip(sorted(sums), means.tolist(), strict=True))
        return terms, images / max(time.perf_counter() - start, 1e-9), step

    def _check_diverged(self, phase: Phase, ctx: EpochContext, step: int, loss: torch.Tensor) -> None:
        """Stop before a non-finite or exploded loss reaches the weights (Phase's divergence guard).
        Reading the loss syncs the device once a step; under torchrun the ranks agree on the verdict
        (one all-reduce), so that all stop together where any one diverged."""
        value = float(loss.detach())
        bad = not math.isfinite(value) or (phase.max_loss is not None and abs(value) > phase.max_loss)
        if is_active():
            flag = torch.tensor([float(bad)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = bool(flag.item())
        if not bad:
            return
        what = "non-finite" if not math.isfinite(value) else f"beyond the limit of {phase.max_loss:g}"
        where = f"{phase.name} epoch {ctx.epoch + 1} step {step}"
        if self.run_dir is not None:
            last = f"the last good checkpoint is {self.run_dir / STATE_NAME} (after epoch {ctx.epoch} of {phase.name})"
        else:
            last = "no checkpoint was written (no run folder)"
        raise TrainingDiverged(
            f"training diverged at {where}: the loss is {value:g}, {what}; {last}. "
            "Lower the learning rate (or the method's step sizes) and fit again"
        )

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not is_active():
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    @contextlib.contextmanager
    def _progress(self, phase: Phase, done: int) -> Iterator[console.ProgressTask]:
        """Rank 0's bar over the phase's epochs (the other ranks stay silent)."""
        if not self.env.is_main:
            yield console.ProgressTask(None, None)
            return
        with console.progress(phase.name, total=phase.epochs) as bar:
            bar.advance(done)
            yield bar

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self, model: nn.Module, index: int, epoch: int, converged: bool, optimizer, scheduler, step: int) -> None:
        rng = capture_rng()
        if is_active():
            every = [None] * self.env.world_size
            dist.all_gather_object(every, rng)
            rng = every
        else:
            rng = [rng]
        if self.run_dir is None or not self.env.is_main:
            return
        save_train_state(
            self.run_dir / STATE_NAME,
            {
                "fingerprint": self.fingerprint,
                "phase": index,
                "epoch": epoch,
                "step": step,
                "phase_done": converged,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "precision": self.precision.state_dict(),
                "extra": self.extra_state.state_dict() if self.extra_state is not None else {},
                "rng": rng,
                "history_lines": self.history.lines,
            },
        )

    def _load(self, model: nn.Module) -> dict[str, Any]:
        """Rank 0 reads the checkpoint and hands it to the others (no shared file system needed)."""
        saved, error = None, None
        if self.env.is_main:
            try:
                saved = load_train_state(self.run_dir / STATE_NAME, self.fingerprint)
            except InputError as exc:
                error = str(exc)
        if is_active():
            box = [saved, error]
            dist.broadcast_object_list(box, src=0)
            saved, error = box
        if error is not None:
            raise InputError(error)
        model.load_state_dict(saved["model"])
        self.precision.load_state_dict(saved["precision"])
        if self.extra_state is not None:
            self.extra_state.load_state_dict(saved["extra"])
        rngs = saved["rng"]
        if len(rngs) == self.env.world_size:
            restore_rng(rngs[self.env.rank])
        else:
            seed_everything(derived_seed(self.seed, self.env.rank, saved["phase"], saved["epoch"]))
            if self.env.is_main:
                console.warn("resumed with a different number of processes: training continues, not bit-identically")
        return saved


def _check_epochs_done(phase: Phase, done: int) -> None:
    """A resume may not ask for fewer epochs than were trained: config.yaml would then record a budget
    the model exceeds, and `fit --config` would not repeat the run."""
    if done > phase.epochs:
        raise InputError(
            f"--resume: this run has trained {done} epochs of {phase.name}, more than the {phase.epochs} asked for; "
            f"give at least {done} (or fit a new run)"
        )


def _shown(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "phase"}
