"""Step-time and switch-latency benchmark: what do the switchable designs cost per step and per switch?

Measured side by side in one process, on one fixed batch, as the median over --iters timed
iterations after --warmup untimed ones. Variants are timed round-robin (one of each per round), so
background load on a shared machine slows them alike instead of biasing one ratio.

    python bench/step_time.py                                   # resnet_tiny on CPU, resnet18 on GPU
    python bench/step_time.py --backbone resnet18 --resolutions 128 112 96 80 64 --batch-size 16

Reports:
  - the fused parallel step (one forward over all S resolutions, one backward, one optimiser step)
    against S separate single-resolution I-Net steps;
  - the SAN step against the RS-Net step (both with their full losses);
  - switch latency at inference: pushing a new route into a model (``set_route``) and baking a SAN
    net into a plain one (``materialize``), against one forward at the smallest resolution;
  - SAN inference with kernels generated on the fly against its materialised plain model;
  - peak memory of the RS-Net and SAN steps: CUDA max_memory_allocated, or on CPU the process's
    peak RSS (VmHWM, reset through /proc/self/clear_refs where Linux allows it) above the RSS before.
A training step is the loop's own ``orchestrator.engine.loop.train_step`` (divergence check, grad scaler and
LR-schedule step included), set up as the loop sets it up, at the project's defaults for the device
(``--precision`` overrides; on CUDA the jobs train with channels_last tensors).

The reference step (P3): a plain-PyTorch re-implementation of the papers' own training step
(d-li14/SAN, yikaiw/RS-Nets), NOT their code: fp32, contiguous tensors, one separate forward per
resolution, the same losses, torch's per-tensor SGD and a host sync per step for the loss, as those
scripts do. It runs the same model definition, so the ratio measures the step machinery
(precision, memory format, optimiser, syncs), not a different architecture.

With ``--json`` the last line is one JSON object: rsnet_step_ms, san_step_ms, fused_over_sum (P1),
san_over_rsnet (P2), rsnet_over_reference (P3), peak_mib_rsnet, peak_mib_san, san_over_rsnet_peak, ...
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from backbones import materialize
from methods import build_method
from jobspec import JobConfig
from orchestrator.engine.loop import (LocalRuntime, TrainState, autocast_for, build_grad_scaler, build_optimizer,
                               build_scheduler, train_step)
from measure import median_times, peak_memory, return_freed_memory_to_the_os  # bench/measure.py


# ---------------------------------------------------------------- setup


def job(args, method: str, resolutions: list[int], **method_options) -> JobConfig:
    cfg = JobConfig()
    cfg.model.backbone, cfg.model.small_input = args.backbone, args.small_input
    cfg.method.name = method
    for key, value in method_options.items():
        setattr(cfg.method, key, value)
    cfg.data.resolutions = list(resolutions)
    # A small lr: the benchmark repeats one batch, and the loop's divergence check is part of the step.
    cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay = 1e-3, 0.9, 1e-4
    cuda = args.device.type == "cuda"
    cfg.train.precision, cfg.train.channels_last = args.precision, cuda
    # One epoch spanning every step the benchmark takes, so the schedule is stepped as in training.
    cfg.train.epochs, cfg.train.warmup_epochs = 1, 0
    return cfg


def steps_taken(args) -> int:
    """Upper bound on the steps one Trainer takes: the timed rounds plus the two memory steps."""
    return args.warmup + args.iters + 2


class Trainer:
    """One method's model, SGD, LR schedule and grad scaler, built as the training loop builds them;
    ``step(xs, labels)`` is the loop's own ``train_step`` and returns its ``LossOutput``."""

    def __init__(self, cfg: JobConfig, args):
        self.cfg = cfg
        self.runtime = LocalRuntime(device=str(args.device), log=lambda msg: None)
        method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
        self.net = method.build(args.num_classes).to(args.device)
        if cfg.train.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(cfg, method, self.net)
        self.state = TrainState(net=self.net, model=self.runtime.wrap(self.net), method=method,
                                optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg, steps_taken(args)),
                                scaler=build_grad_scaler(cfg, args.device))
        self.steps = 0

    def step(self, xs, labels):
        out = train_step(self.state, xs, labels, self.cfg, self.runtime, epoch=0, step=self.steps)
        self.steps += 1
        return out


class ReferenceStep:
    """The papers' training step, re-implemented in plain PyTorch (see the module docstring): fp32,
    separate forwards per resolution, per-tensor SGD, the loss read on the host every step."""

    def __init__(self, method_name: str, args):
        self.cfg = job(args, method_name, args.resolutions)
        self.cfg.train.precision, self.cfg.train.channels_last = "fp32", False
        self.method = build_method(self.cfg.method, self.cfg.model, self.cfg.data.resolutions)
        self.net = self.method.build(args.num_classes).to(args.device)
        self.optimizer = torch.optim.SGD(self.method.param_groups(self.net, self.cfg.train.weight_decay),
                                         lr=self.cfg.train.lr, momentum=self.cfg.train.momentum, foreach=False)

    def step(self, xs, labels) -> None:
        xs = [x.contiguous() for x in xs]
        logits = [self.net(x, resolution=r, slot=s) for s, (r, x) in enumerate(zip(self.cfg.data.resolutions, xs))]
        out = self.method.loss(self.net, logits, labels)
        self.optimizer.zero_grad()
        out.total.backward()
        self.optimizer.step()
        out.total.item()  # the reference scripts log the loss every step


def make_batch(args):
    """One batch at the largest resolution, resized to each training resolution (like the single crop)."""
    g = torch.Generator().manual_seed(0)
    big = torch.randn(args.batch_size, 3, max(args.resolutions), max(args.resolutions), generator=g)
    xs = [F.interpolate(big, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
          for r in args.resolutions]
    memory_format = torch.channels_last if args.device.type == "cuda" else torch.contiguous_format
    xs = [x.to(args.device).contiguous(memory_format=memory_format) for x in xs]
    labels = torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(args.device)
    return xs, labels


# ---------------------------------------------------------------- the benchmark


WIDTH = 66  # label column of the report


def show(rows) -> None:
    """Print one block of the report at once. Each block goes out (flushed) as soon as it is measured: when
    stdout is a pipe or a file, Python buffers it, and a run stopped before the end (a time limit; on a busy
    CPU a run takes several times as long) would otherwise leave no output at all."""
    for label, value in rows:
        print(f"{label:{WIDTH}}{value}")
    sys.stdout.flush()


def progress(what: str) -> None:
    """What is being measured, on stderr: a run that is stopped shows where it was."""
    print(f"[step_time] {what} ...", file=sys.stderr, flush=True)


def ms(s: float) -> str:
    return f"{1e3 * s:10.3f} ms"


def ratio(r: float) -> str:
    return f"{r:10.3f} x" if r >= 1e-3 else f"{r:10.1e} x"


def mib(m: float) -> str:
    return f"{m:10.1f} MiB"


def run(args) -> None:
    torch.manual_seed(0)
    res, S = args.resolutions, len(args.resolutions)
    device_name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads)"
    precision = f"{args.precision}{', channels_last' if args.device.type == 'cuda' else ''}"
    print(f"device {device_name} | {precision} | backbone {args.backbone}"
          f"{' (small input)' if args.small_input else ''} | resolutions {' '.join(map(str, res))} | "
          f"batch {args.batch_size} | {args.num_classes} classes | median of {args.iters} after {args.warmup} warm-up",
          flush=True)
    xs, labels = make_batch(args)

    progress("building the models")
    parallel = Trainer(job(args, "parallel", res), args)
    inets = [Trainer(job(args, "individual", [r]), args) for r in res]
    rsnet = Trainer(job(args, "rsnet", res), args)
    san = Trainer(job(args, "san", res), args)
    ref_rsnet, ref_san = ReferenceStep("rsnet", args), ReferenceStep("san", args)

    progress(f"timing training steps: {S + 5} variants x {args.warmup + args.iters} rounds")
    steps = median_times({
        "parallel": lambda: parallel.step(xs, labels),
        **{f"inet{r}": (lambda t=t, x=x: t.step([x], labels)) for r, t, x in zip(res, inets, xs)},
        "rsnet": lambda: rsnet.step(xs, labels),
        "san": lambda: san.step(xs, labels),
        "ref_rsnet": lambda: ref_rsnet.step(xs, labels),
        "ref_san": lambda: ref_san.step(xs, labels),
    }, args)
    inet_sum = sum(steps[f"inet{r}"] for r in res)
    show([
        ("training step", ""),
        (f"  parallel, fused over {S} resolutions", ms(steps["parallel"])),
        (f"  {S} single-resolution I-Net steps, sum", ms(inet_sum)),
        ("  fused / sum", ratio(steps["parallel"] / inet_sum)),
        ("  RS-Net (parallel + MRED)", ms(steps["rsnet"])),
        ("  SAN (meta convs + scale distillation)", ms(steps["san"])),
        ("  SAN / RS-Net", ratio(steps["san"] / steps["rsnet"])),
        ("  reference RS-Net step (plain PyTorch, fp32)", ms(steps["ref_rsnet"])),
        ("  reference SAN step (plain PyTorch, fp32)", ms(steps["ref_san"])),
        ("  RS-Net / reference", ratio(steps["rsnet"] / steps["ref_rsnet"])),
        ("  SAN / reference", ratio(steps["san"] / steps["ref_san"])),
    ])

    # Inference: switching and SAN's generated kernels.
    progress("timing resolution switches and inference")
    smallest, largest = min(res), max(res)
    x_small, x_large = xs[res.index(smallest)], xs[res.index(largest)]
    for t in (rsnet, san):
        t.net.eval()
    plain = {r: materialize(san.net, r) for r in (smallest, largest)}
    if args.device.type == "cuda":
        plain = {r: m.to(memory_format=torch.channels_last) for r, m in plain.items()}
    switch_calls = 1000
    routes = [rsnet.net.route(r) for r in res]

    def switch_many():
        for i in range(switch_calls):
            rsnet.net.set_route(routes[i % S])
        rsnet.net.set_route(None)

    with torch.no_grad(), autocast_for(rsnet.cfg, args.device):
        infer = median_times({
            "set_route x1000": switch_many,
            "materialize": lambda: materialize(san.net, smallest),
            "rsnet fwd small": lambda: rsnet.net(x_small, resolution=smallest),
            "san fwd small": lambda: san.net(x_small, resolution=smallest),
            "plain fwd small": lambda: plain[smallest](x_small),
            "san fwd large": lambda: san.net(x_large, resolution=largest),
            "plain fwd large": lambda: plain[largest](x_large),
        }, args)
    fwd_small = infer["rsnet fwd small"]
    per_switch = infer["set_route x1000"] / switch_calls
    rows = [
        ("resolution switch at inference", ""),
        ("  set_route (route + push to every layer)", ms(per_switch)),
        (f"  SAN materialize at {smallest}", ms(infer["materialize"])),
        (f"  one RS-Net forward at {smallest}", ms(fwd_small)),
        ("  set_route / forward", ratio(per_switch / fwd_small)),
        ("  materialize / forward", ratio(infer["materialize"] / fwd_small)),
        ("SAN inference, generated kernels / materialised plain model", ""),
    ]
    for r, tag in ((smallest, "small"), (largest, "large")):
        gen, mat = infer[f"san fwd {tag}"], infer[f"plain fwd {tag}"]
        rows.append((f"  at {r} ({1e3 * gen:.3f} ms / {1e3 * mat:.3f} ms)", ratio(gen / mat)))
    show(rows)

    # Memory last: on CPU the allocator setting it needs makes every large allocation an mmap, which
    # would slow the timed steps above.
    progress("measuring the peak memory of one step")
    if args.device.type == "cpu":
        return_freed_memory_to_the_os()
    memory = {}
    for name, t in (("rsnet", rsnet), ("san", san)):
        t.net.train()
        t.step(xs, labels)  # settle the allocator under the new setting
        memory[name] = peak_memory(lambda t=t: t.step(xs, labels), args.device)
    rows = [(f"peak memory of one step ({memory['rsnet'][2]})", "")]
    for name, label in (("rsnet", "RS-Net"), ("san", "SAN")):
        peak, above, _ = memory[name]
        rows.append((f"  {label} peak", mib(peak)))
        if above is not None:
            rows.append((f"  {label} peak above the level before the step", mib(above)))
    if memory["rsnet"][1] and memory["san"][1] is not None:
        rows.append(("  SAN / RS-Net (above before)", ratio(memory["san"][1] / memory["rsnet"][1])))
    show(rows)

    if args.json:
        above = {k: memory[k][1] if memory[k][1] is not None else memory[k][0] for k in ("rsnet", "san")}
        print(json.dumps({
            "device": device_name, "precision": args.precision, "backbone": args.backbone,
            "resolutions": res, "batch_size": args.batch_size,
            "rsnet_step_ms": round(1e3 * steps["rsnet"], 3), "san_step_ms": round(1e3 * steps["san"], 3),
            "parallel_step_ms": round(1e3 * steps["parallel"], 3), "inet_sum_ms": round(1e3 * inet_sum, 3),
            "fused_over_sum": round(steps["parallel"] / inet_sum, 4),
            "san_over_rsnet": round(steps["san"] / steps["rsnet"], 4),
            "ref_rsnet_step_ms": round(1e3 * steps["ref_rsnet"], 3), "ref_san_step_ms": round(1e3 * steps["ref_san"], 3),
            "rsnet_over_reference": round(steps["rsnet"] / steps["ref_rsnet"], 4),
            "san_over_reference": round(steps["san"] / steps["ref_san"], 4),
            "peak_mib_rsnet": round(above["rsnet"], 1), "peak_mib_san": round(above["san"], 1),
            "san_over_rsnet_peak": round(above["san"] / max(above["rsnet"], 1e-9), 4),
            "memory_measure": memory["rsnet"][2],
        }), flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default=None, help="default: resnet18 on GPU, resnet_tiny on CPU")
    p.add_argument("--resolutions", type=int, nargs="+", default=None,
                   help="large to small; default 224 192 160 128 96 (GPU) or 32 28 24 20 16 (CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (GPU) or 16 (CPU)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (the median is reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=None, help="default 1000, or 10 for resnet_tiny")
    p.add_argument("--small-input", action="store_true", help="3x3 stride-1 stem (for 16-64 px inputs)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                   help="default: the project's default for the device (train.precision resolved)")
    p.add_argument("--json", action="store_true", help="end with one JSON object of the headline figures")
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    gpu = args.device.type == "cuda"
    args.backbone = args.backbone or ("resnet18" if gpu else "resnet_tiny")
    args.resolutions = sorted(args.resolutions or ([224, 192, 160, 128, 96] if gpu else [32, 28, 24, 20, 16]),
                              reverse=True)
    args.batch_size = args.batch_size or (64 if gpu else 16)
    args.num_classes = args.num_classes or (10 if args.backbone == "resnet_tiny" else 1000)
    args.precision = args.precision or ("bf16" if gpu else "fp32")
    return args


if __name__ == "__main__":
    run(parse_args())
