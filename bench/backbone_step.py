"""What does making a library CNN switchable cost per training step? timm's ResNet-50 and EfficientNet-B0
as RS-Nets (``timm:<name>``: private BN slots swapped in by surgery) against the plain timm model.

Every variant takes one step over all training resolutions on one fixed batch: one forward per
resolution, one backward of the summed loss, one SGD step, timed as the median over --iters
iterations after --warmup untimed ones, round-robin (one of each per round) so that background
load on a shared machine slows them alike:
  - plain:    timm.create_model(name), sum of the per-resolution cross-entropies;
  - parallel: the switchable net (private BN), the same loss: the cost of the switchable layers alone;
  - rsnet:    the switchable net with RS-Net's full loss (L_cls + L_ens + L_dis, MRED).
The goal is rsnet / plain <= 1.05.

    python bench/backbone_step.py                                  # GPU: 224..96, batch 32
    python bench/backbone_step.py --device cpu --resolutions 64 56 48 40 32 --batch-size 4 --iters 5

With ``--json`` the last line is one JSON object: per backbone, plain_ms, parallel_ms, rsnet_ms,
parallel_over_plain and rsnet_over_plain.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from backbones.external import build_plain
from jobspec import JobConfig
from measure import median_times  # bench/measure.py
from methods import build_method


def stepper(net, loss_of, xs, labels):
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_of(net, xs, labels).backward()
        optimizer.step()
    return step


def plain_loss(net, xs, labels):
    return sum(F.cross_entropy(net(x), labels) for x in xs)


def method_loss(method):
    return lambda net, xs, labels: method.loss(net, net(xs), labels).total


def switchable(name: str, method_name: str, resolutions: list[int], num_classes: int, device):
    cfg = JobConfig.parse({"model": {"backbone": name}, "method": {"name": method_name},
                           "data": {"resolutions": resolutions}})
    method = build_method(cfg.method, cfg.model, resolutions)
    return method, method.build(num_classes).to(device).train()


def measure(name: str, args) -> dict:
    device = args.device
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(args.batch_size, 3, r, r, generator=g).to(device) for r in args.resolutions]
    labels = torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(device)
    plain = build_plain(name, args.num_classes).to(device).train()
    parallel, parallel_net = switchable(name, "parallel", args.resolutions, args.num_classes, device)
    rsnet, rsnet_net = switchable(name, "rsnet", args.resolutions, args.num_classes, device)
    times = median_times({
        "plain": stepper(plain, plain_loss, xs, labels),
        "parallel": stepper(parallel_net, method_loss(parallel), xs, labels),
        "rsnet": stepper(rsnet_net, method_loss(rsnet), xs, labels),
    }, args)
    ms = {k: v * 1e3 for k, v in times.items()}
    return {"plain_ms": round(ms["plain"], 2), "parallel_ms": round(ms["parallel"], 2), "rsnet_ms": round(ms["rsnet"], 2),
            "parallel_over_plain": round(ms["parallel"] / ms["plain"], 3),
            "rsnet_over_plain": round(ms["rsnet"] / ms["plain"], 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["timm:resnet50", "timm:efficientnet_b0"])
    p.add_argument("--resolutions", type=int, nargs="+", default=[224, 192, 160, 128, 96])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", type=torch.device,
                   default=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = {}
    print(f"device {args.device}, batch {args.batch_size}, resolutions {args.resolutions}, "
          f"median of {args.iters} after {args.warmup} warm-up steps")
    for name in args.backbones:
        r = results[name] = measure(name, args)
        print(f"{name:<24} plain {r['plain_ms']:9.1f} ms   parallel {r['parallel_ms']:9.1f} ms "
              f"({r['parallel_over_plain']:.3f}x)   rsnet {r['rsnet_ms']:9.1f} ms ({r['rsnet_over_plain']:.3f}x)")
    if args.json:
        print(json.dumps({"device": str(args.device), "batch_size": args.batch_size,
                          "resolutions": args.resolutions, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
