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
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]  # step_time's helpers, and the project when it is not installed

import torch  # noqa: E402

from jobspec import JobConfig  # noqa: E402
from step_time import Trainer, job, make_batch, median_times  # noqa: E402


def config(args, backbone: str, weight_bits: int, act_bits: int) -> JobConfig:
    """step_time's RS-Net job (the loop's setup, a small lr, the device's precision) on ``backbone``."""
    cfg = job(args, "rsnet", args.resolutions)
    cfg.model.backbone, cfg.model.weight_bits, cfg.model.act_bits = backbone, weight_bits, act_bits
    cfg.model.width = args.width
    return cfg.validate()


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
    args.precision = "bf16" if args.device.type == "cuda" else "fp32"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preact = f"preact_{args.backbone}"
    variants = {"fp32 " + args.backbone: (args.backbone, 32, 32), "W2/A32 " + args.backbone: (args.backbone, 2, 32),
                "fp32 " + preact: (preact, 32, 32), "W2/A2 " + preact: (preact, 2, 2)}
    trainers = {name: Trainer(config(args, *v), args) for name, v in variants.items()}
    xs, labels = make_batch(args)
    times = median_times({name: (lambda t=t: t.step(xs, labels)) for name, t in trainers.items()}, args)
    print(f"RS-Net training step, {args.device}, batch {args.batch_size} at {args.resolutions}, "
          f"median of {args.iters} (threads={args.threads}):")
    names = list(times)
    for i, name in enumerate(names):
        base = times[names[0] if i < 2 else names[2]]
        print(f"  {name:<28} {times[name] * 1e3:8.1f} ms   x{times[name] / base:.2f} vs fp32 on the same backbone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
