"""What LQ-Nets quantization costs per training step: a quantized RS-Net step against a full-precision one.

    python bench/quant_step.py                          # tiny backbones on CPU (about a minute)
    python bench/quant_step.py --backbone resnet18 --resolutions 224 192 160 128 96 --batch-size 64 --device cuda

Four RS-Net variants (full MRED, private BN), each a step of the loop's own ``train_step`` (forward over
every resolution, loss, backward, SGD, LR schedule) on one fixed batch, timed round-robin so that
background load slows them alike; the median over --iters steps after --warmup:
  - fp32 weights on ``--backbone`` (the baseline) and W2/A32 on it;
  - fp32 weights on its pre-activation twin and W2/A2 on it (activation quantization needs it).
A quantized step adds, per quantized conv, the weight quantizer's refit (one QEM iteration, once per
step) and its nearest-level search at every resolution, and per activation quantizer a nearest-level
search and a least-squares update over the whole activation tensor.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from jobspec import JobConfig
from methods import build_method
from orchestrator.loop import (LocalRuntime, TrainState, build_grad_scaler, build_optimizer, build_scheduler,
                               train_step)


def config(args, backbone: str, weight_bits: int, act_bits: int) -> JobConfig:
    cuda = args.device.type == "cuda"
    return JobConfig.parse({
        "model": {"backbone": backbone, "small_input": args.small_input, "weight_bits": weight_bits,
                  "act_bits": act_bits, "width": args.width},
        "method": {"name": "rsnet"}, "data": {"resolutions": args.resolutions},
        # A small lr: one batch is repeated, and the loop's divergence check is part of the step.
        "train": {"lr": 1e-3, "epochs": 1, "precision": "bf16" if cuda else "fp32", "channels_last": cuda},
    }).validate()


class Trainer:
    """An RS-Net with its SGD, schedule and grad scaler, built as the training loop builds them."""

    def __init__(self, cfg: JobConfig, args):
        self.cfg, self.steps = cfg, 0
        self.runtime = LocalRuntime(device=str(args.device), log=lambda _: None)
        method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
        net = method.build(args.num_classes).to(args.device)
        if cfg.train.channels_last:
            net = net.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(cfg, method, net)
        self.state = TrainState(net=net, model=net, method=method, optimizer=optimizer,
                                scheduler=build_scheduler(optimizer, cfg, args.warmup + args.iters),
                                scaler=build_grad_scaler(cfg, args.device))

    def step(self, xs, labels) -> None:
        train_step(self.state, xs, labels, self.cfg, self.runtime, epoch=0, step=self.steps)
        self.steps += 1


def batch(args):
    g = torch.Generator().manual_seed(0)
    big = torch.randn(args.batch_size, 3, max(args.resolutions), max(args.resolutions), generator=g)
    fmt = torch.channels_last if args.device.type == "cuda" else torch.contiguous_format
    xs = [F.interpolate(big, size=(r, r), mode="bilinear", antialias=True).to(args.device).contiguous(memory_format=fmt)
          for r in args.resolutions]
    return xs, torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(args.device)


def median_step_times(trainers: dict[str, Trainer], xs, labels, args) -> dict[str, float]:
    def sync():
        if args.device.type == "cuda":
            torch.cuda.synchronize(args.device)
    for _ in range(args.warmup):
        for t in trainers.values():
            t.step(xs, labels)
    times = {name: [] for name in trainers}
    for _ in range(args.iters):
        for name, t in trainers.items():
            sync()
            t0 = time.perf_counter()
            t.step(xs, labels)
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet_tiny", help="a backbone with a preact_ twin (default resnet_tiny)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 24, 16])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--width", type=int, default=16, help="tiny backbones only")
    p.add_argument("--small-input", action="store_true", help="3x3 stem, no max-pool (implied for tiny backbones)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as a 1-CPU job)")
    p.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preact = f"preact_{args.backbone}"
    variants = {"fp32 " + args.backbone: (args.backbone, 32, 32), "W2/A32 " + args.backbone: (args.backbone, 2, 32),
                "fp32 " + preact: (preact, 32, 32), "W2/A2 " + preact: (preact, 2, 2)}
    trainers = {name: Trainer(config(args, *v), args) for name, v in variants.items()}
    xs, labels = batch(args)
    times = median_step_times(trainers, xs, labels, args)
    print(f"RS-Net training step, {args.device}, batch {args.batch_size} at {args.resolutions}, "
          f"median of {args.iters} (threads={args.threads}):")
    names = list(times)
    for i, name in enumerate(names):
        base = times[names[0] if i < 2 else names[2]]
        print(f"  {name:<28} {times[name] * 1e3:8.1f} ms   x{times[name] / base:.2f} vs fp32 on the same backbone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
