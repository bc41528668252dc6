"""The one training loop. Every method plugs in through ``Method.build`` / ``Method.loss``; nothing here
knows which method it runs.

Where the loop runs (this process, or a Ray Train worker inside a DDP group) is a ``Runtime``: it
says which rank this is, wraps the model for DDP, hands back a checkpoint to resume from, and takes
each epoch's metrics and checkpoint. ``LocalRuntime`` is the single-process one used by
``resolab train``; ``orchestrator.cluster.ray_job`` provides the Ray ones.

One optimisation step is ``train_step``; ``bench/step_time.py`` times that same function.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from analysis.matrix import diagonal_top1
from backbones.complexity import training_madds
from backbones.preprocess import normalize_on_device
from jobspec import ConfigError, JobConfig
from methods import LossOutput, Method, build_method
from orchestrator.engine import checkpoint as ckpt
from orchestrator.data.loaders import (build_calibration_images, build_calibration_loader, build_loader,
                               build_train_dataset, build_val_dataset, set_epoch)

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exceeded train.divergence_threshold."""


# ---------------------------------------------------------------- runtimes


class Runtime:
    """Where the loop runs. The defaults describe one process (rank 0 of 1, the net used as is);
    subclasses say where a run resumes from and where each epoch's metrics and checkpoint go.
    ``log`` takes the loop's status lines (this module's logger unless given: a test keeps them in a list)."""

    rank = 0
    world_size = 1

    def __init__(self, device: str | None = None, log: Callable[[str], None] | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.log = log or logger.info

    def wrap(self, net: nn.Module) -> nn.Module:
        return net

    def any_rank(self, flag: bool) -> bool:
        """True if ``flag`` is true on any rank (a collective under DDP, so that every rank stops together)."""
        return flag

    def restore(self) -> Path | None:
        """A directory holding checkpoint.pt to resume from, or None to start fresh."""
        raise NotImplementedError

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        """Take one epoch's metrics and (rank 0) the directory its checkpoint was written to."""
        raise NotImplementedError


class LocalRuntime(Runtime):
    """Single process, CPU or one GPU. Checkpoints go to ``out_dir/checkpoint/`` (none without out_dir)."""

    def __init__(self, out_dir: Path | None = None, device: str | None = None,
                 log: Callable[[str], None] | None = None):
        super().__init__(device=device, log=log)
        self.out_dir = Path(out_dir) if out_dir else None

    def restore(self) -> Path | None:
        if self.out_dir and (self.out_dir / "checkpoint" / ckpt.CHECKPOINT_FILE).exists():
            return self.out_dir / "checkpoint"
        return None

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is not None and self.out_dir is not None:
            ckpt.copy(checkpoint_dir, self.out_dir / "checkpoint")
        shown = {k: v for k, v in metrics.items() if k.startswith(("loss/", "acc1/", "lr", "img_per_s"))}
        # Counted from 1, as the live view of `resolab run` shows it (metrics["epoch"] counts from 0).
        self.log(f"epoch {metrics['epoch'] + 1}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()))


@dataclass
class TrainedJob:
    net: nn.Module  # the unwrapped MultiResolutionNet
    method: Method
    num_classes: int
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0  # where this invocation began: 0 = fresh, e + 1 = resumed after epoch e


# ---------------------------------------------------------------- one step


@dataclass
class TrainState:
    """Everything one optimisation step reads and updates."""
    net: nn.Module  # the unwrapped MultiResolutionNet: method.loss reads method state (alpha, meta nets) here
    model: nn.Module  # net as the runtime wrapped it (DDP): the forward goes through it so gradients sync
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    watch: "DivergenceWatch | None" = None  # None: check every step (train.check_every=1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then half-cosine from 1 to 0 (both papers: lr 0.1 cosine to zero)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(cfg: JobConfig, method: Method, net: nn.Module) -> torch.optim.Optimizer:
    # The multi-tensor (foreach) SGD: one kernel per parameter group instead of one per tensor. Same
    # update as the per-tensor loop; PyTorch only picks it by itself when every parameter is on CUDA.
    # fused=True would be one kernel on CUDA, but it refuses the grad scaler's inf checks on older
    # torch and gains little over foreach for SGD; foreach measured at least as fast on CPU.
    return torch.optim.SGD(method.param_groups(net, cfg.train.weight_decay), lr=cfg.train.lr,
                           momentum=cfg.train.momentum, nesterov=False, foreach=True)


def step_lr_at(step: int, steps_per_epoch: int, warmup_steps: int, milestones: list[int], gamma: float) -> float:
    """Linear warm-up, then ``gamma`` to the power of the milestones (in epochs) passed (LQ-Nets' schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return gamma ** sum(step >= m * steps_per_epoch for m in milestones)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: JobConfig, steps_per_epoch: int):
    """Stepped once per optimisation step: warm-up over train.warmup_epochs, then cosine to zero or the
    step schedule of train.milestones.

    torch's LambdaLR with the closed forms above, not LinearLR + CosineAnnealingLR / MultiStepLR under
    SequentialLR: those update the lr recursively from the previous step's, which drifts in the last
    bits (on the quickstart's schedule, 209 of 256 steps differ, by up to 6e-16 of the base lr), so
    every finished run would stop being reproducible bit for bit by a rerun or a resume."""
    total_steps = steps_per_epoch * cfg.train.epochs
    warmup = steps_per_epoch * cfg.train.warmup_epochs
    if cfg.train.schedule == "step":
        milestones, gamma = list(cfg.train.milestones), cfg.train.gamma
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: step_lr_at(s, steps_per_epoch, warmup, milestones, gamma))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, total_steps, warmup))


def build_grad_scaler(cfg: JobConfig, device: torch.device) -> torch.amp.GradScaler:
    # fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not (the scaler is then a no-op).
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.train.precision == "fp16")


def autocast_for(cfg: JobConfig, device: torch.device):
    """Autocast for train.precision on any device: bf16 applies on CPU too (oneDNN bf16 kernels)."""
    if cfg.train.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _diverged(epoch: int, steps: str, value: float, terms: dict, where: str, cfg: JobConfig) -> TrainingDiverged:
    # Epochs and steps are counted from 1 here, as a user counts them.
    parts = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
    return TrainingDiverged(
        f"loss diverged at epoch {epoch + 1} of {cfg.train.epochs} {steps}: {where}total={value:.4g} ({parts}); threshold "
        f"train.divergence_threshold={cfg.train.divergence_threshold:g}. Lower train.lr, add "
        "train.warmup_epochs, or check the data.")


def check_finite(loss: torch.Tensor, terms: dict, cfg: JobConfig, epoch: int, step: int, runtime: Runtime) -> None:
    """The per-step check (train.check_every=1): one host sync, before any weight changes."""
    value = loss.item()
    bad_here = not math.isfinite(value) or value > cfg.train.divergence_threshold
    if runtime.any_rank(bad_here):
        where = "" if bad_here else f"on another rank (rank {runtime.rank} had total={value:.4g}); "
        raise _diverged(epoch, f"step {step + 1}", value, terms, where, cfg)


class DivergenceWatch:
    """The divergence check every ``train.check_every`` steps: between checks each step's verdict is
    kept on the device (no host sync), together with the first bad step's number, total and terms; a
    check syncs once (and all-reduces once under DDP) and names the step window it covers. The weights
    of the steps after a bad one have been updated by then; the job fails all the same."""

    def __init__(self, cfg: JobConfig):
        self.cfg, self.every = cfg, cfg.train.check_every
        self.reset()

    def reset(self) -> None:
        self.first_step, self.bad, self.state = None, None, None

    def add(self, out: LossOutput, step: int) -> None:
        total = out.total.detach().float()
        bad = ~torch.isfinite(total) | (total > self.cfg.train.divergence_threshold)
        now = {"step": torch.full_like(total, step), "total": total,
               **{k: torch.as_tensor(v, device=total.device).detach().float() for k, v in out.terms.items()}}
        if self.bad is None:
            self.first_step, self.bad, self.state = step, bad, now
        else:  # keep the first bad step's values: where(already bad, kept, this step)
            self.state = {k: torch.where(self.bad, self.state[k], v) for k, v in now.items()}
            self.bad = self.bad | bad

    def due(self, step: int, last_step: int) -> bool:
        return self.bad is not None and (step - self.first_step + 1 >= self.every or step >= last_step)

    def check(self, epoch: int, step: int, runtime: Runtime) -> None:
        bad_here, state, first = bool(self.bad.item()), self.state, self.first_step
        self.reset()
        if runtime.any_rank(bad_here):
            window = f"steps {first + 1}-{step + 1}" if step > first else f"step {first + 1}"
            value = float(state["total"])
            if bad_here:
                where = f"step {int(state['step']) + 1} (checked every {self.every} steps over {window}): "
                terms = {k: v for k, v in state.items() if k not in ("step", "total")}
                raise _diverged(epoch, f"in {window}", value, terms, where, self.cfg)
            raise _diverged(epoch, f"in {window}", value, {}, f"on another rank (rank {runtime.rank} "
                            "was finite); ", self.cfg)


def to_device(xs, labels, cfg: JobConfig, device: torch.device):
    """A loader batch (uint8 images, one tensor per training resolution; labels) on ``device``:
    normalised there, once per batch, in the step's memory format."""
    xs = [normalize_on_device(x, device, channels_last=cfg.train.channels_last) for x in xs]
    return xs, labels.to(device, non_blocking=True)


def train_step(state: TrainState, xs: list[torch.Tensor], labels: torch.Tensor, cfg: JobConfig,
               runtime: Runtime, epoch: int, step: int) -> LossOutput:
    """One optimisation step on a batch already on the device: one forward over every training
    resolution, the method's loss, the divergence check (on every rank, before any weight changes),
    one backward, the optimiser step and the LR-schedule step. ``epoch`` and ``step`` name the step
    in a divergence error."""
    with autocast_for(cfg, runtime.device):
        out = state.method.loss(state.net, state.model(xs), labels)
    if state.watch is None:
        check_finite(out.total, out.terms, cfg, epoch, step, runtime)
    else:
        state.watch.add(out, step)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(out.total).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return out


def compile_backbone(net: nn.Module) -> None:
    """train.compile: torch.compile the backbone in place (``Module.compile`` keeps the state-dict keys,
    so checkpoints stay interchangeable). The first steps at each new input shape pay the compile;
    SAN's generated kernels and the route switches between resolutions may cause recompiles."""
    net.backbone.compile()


def build_net(cfg: JobConfig, method: Method, num_classes: int, device: torch.device) -> nn.Module:
    """The method's net on ``device`` as the loop trains it (memory format, compiled backbone); an
    evaluation of a checkpoint builds it the same way, so that it computes the same numbers."""
    if device.type == "cuda":
        # Every step runs the same few input shapes (one per training resolution): cuDNN times its
        # algorithms once per shape and keeps the fastest, as torchvision's reference scripts do by
        # default. The chosen algorithms may differ between runs, so GPU runs match closely, not bitwise.
        torch.backends.cudnn.benchmark = True
    net = method.build_initialised(num_classes, error=ConfigError).to(device)  # model.init: plain weights
    if cfg.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        compile_backbone(net)
    return net


# ---------------------------------------------------------------- the loop


def train_epoch(state: TrainState, loader, cfg: JobConfig, runtime: Runtime, epoch: int,
                steps_per_epoch: int) -> dict[str, float]:
    """At most ``steps_per_epoch`` steps over ``loader``: the lr reached, throughput and mean loss terms."""
    set_epoch(loader, epoch)
    state.model.train()
    # Loss terms are summed on the device and read once per epoch: no host sync per step.
    sums: dict[str, torch.Tensor] = {}
    images, t0 = 0, time.perf_counter()
    last_step = steps_per_epoch - 1  # train() caps steps_per_epoch at len(loader)
    for step, (xs, labels) in enumerate(loader):
        if step >= steps_per_epoch:
            break
        xs, labels = to_device(xs, labels, cfg, runtime.device)
        out = train_step(state, xs, labels, cfg, runtime, epoch, step)
        if state.watch is not None and state.watch.due(step, last_step):
            state.watch.check(epoch, step, runtime)
        for k, v in {"total": out.total.detach(), **out.terms}.items():
            v = torch.as_tensor(v).detach().float()
            sums[k] = sums[k] + v if k in sums else v
        images += labels.numel() * runtime.world_size
    if state.watch is not None and state.watch.bad is not None:  # a loader shorter than announced
        state.watch.check(epoch, last_step, runtime)
    elapsed = time.perf_counter() - t0
    return {"lr": state.optimizer.param_groups[0]["lr"], "img_per_s": images / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
            **{f"loss/{k}": float(v) / max(1, steps_per_epoch) for k, v in sums.items()}}


def train(cfg: JobConfig, runtime: Runtime, job_hash: str) -> TrainedJob:
    device = runtime.device
    seed_everything(cfg.train.seed)
    method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
    train_set = build_train_dataset(cfg.data)
    # The per-epoch curves: each training slot at its own resolution.
    val_resolutions = sorted(set(cfg.data.resolutions), reverse=True)
    val_set = build_val_dataset(cfg.data, val_resolutions)
    num_classes = cfg.data.num_classes or train_set.num_classes
    per_worker_batch = max(1, cfg.train.batch_size // runtime.world_size)
    loader = build_loader(train_set, per_worker_batch, shuffle=True, seed=cfg.train.seed,
                          workers=cfg.data.loader_workers, drop_last=True,
                          rank=runtime.rank, world_size=runtime.world_size)
    val_loader = build_loader(val_set, cfg.eval.batch_size, shuffle=False, seed=0,
                              workers=cfg.data.loader_workers, drop_last=False)
    if len(loader) == 0:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the training set "
                         f"({len(train_set)} images over {runtime.world_size} workers); lower it")

    net = build_net(cfg, method, num_classes, device)
    optimizer = build_optimizer(cfg, method, net)
    steps_per_epoch = len(loader) if cfg.train.max_steps_per_epoch is None else min(len(loader), cfg.train.max_steps_per_epoch)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    # Compute per epoch (1e12 multiply-adds, forward): what a search's scheduler may measure progress in.
    images_per_epoch = steps_per_epoch * per_worker_batch * runtime.world_size
    compute_per_epoch = images_per_epoch * training_madds(net, cfg.data.resolutions) / 1e12

    start_epoch, history = 0, []
    resume_dir = runtime.restore()
    if resume_dir is not None:
        saved = ckpt.load(resume_dir, job_hash, cfg.method.name)
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        ckpt.set_rng_state(saved["rng"])
        start_epoch, history = int(saved["epoch"]) + 1, list(saved.get("history", []))
        runtime.log(f"resumed from {resume_dir} after epoch {saved['epoch'] + 1} of {cfg.train.epochs}")  # counted from 1, as in the live view
    scaler = build_grad_scaler(cfg, device)
    state = TrainState(net=net, model=runtime.wrap(net), method=method, optimizer=optimizer,
                       scheduler=scheduler, scaler=scaler,
                       watch=DivergenceWatch(cfg) if cfg.train.check_every > 1 else None)
    for epoch in range(start_epoch, cfg.train.epochs):
        metrics = {"epoch": epoch, "start_epoch": start_epoch, "world_size": runtime.world_size,
                   "compute": (epoch + 1) * compute_per_epoch,
                   **train_epoch(state, loader, cfg, runtime, epoch, steps_per_epoch),
                   **method.epoch_metrics(net)}
        if runtime.rank == 0:
            t1 = time.perf_counter()
            metrics.update(diagonal_top1(net, val_loader, val_resolutions, device, cfg.eval.max_batches))
            metrics["val_time_s"] = time.perf_counter() - t1
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint_dir = None
            if runtime.rank == 0:
                checkpoint_dir = Path(tmp)
                ckpt.save(checkpoint_dir, {
                    "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": ckpt.rng_state(),
                    "config": cfg.to_dict(), "config_hash": job_hash, "method": cfg.method.name,
                    "history": history})
            runtime.report(metrics, checkpoint_dir)
    return TrainedJob(net=net, method=method, num_classes=num_classes, history=history, start_epoch=start_epoch)


def calibration_batches_for(cfg: JobConfig, device: torch.device):
    """A function test_resolution -> list of training batches at that resolution (SAN BN recalibration)."""
    images = None  # listed on the first call: most jobs never recalibrate

    def batches(resolution: int):
        nonlocal images
        if images is None:
            images = build_calibration_images(cfg.data)
        loader = build_calibration_loader(images, resolution, cfg.data.crop, cfg.eval.batch_size,
                                          seed=cfg.train.seed, workers=cfg.data.loader_workers,
                                          scale=cfg.data.crop_scale)
        out = []
        for i, (xs, _) in enumerate(loader):
            if i >= cfg.eval.calib_batches:
                break
            out.append(normalize_on_device(xs[0] if isinstance(xs, (list, tuple)) else xs, device))
        return out
    return batches
