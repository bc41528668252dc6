"""Do SAN's MLP meta nets bend over the training scales? Where their hidden units' kinks lie after training.

A hidden unit of an MLP meta net computes relu(V eps + c), with its kink at eps = -c / V. resolab starts
every unit active over the training range [eps_min, eps_max] with its kink below eps_min
(``backbones.switchable._place_kinks_``), so at step 0 the MLP is exactly affine in eps there: the linear
meta net b + eps w in other coordinates. It bends over that range only where training moves a kink into
it. This trains one SAN with an MLP meta net (the quickstart's job by default) and counts, over every
meta conv, the units whose kink lies inside the range, those active over all of it and those dead over
all of it, and how far each generated kernel is from affine in eps over the range (0 = affine).

    python bench/meta_kinks.py                        # quickstart SAN, meta_hidden 8, 4 epochs, seed 0
    python bench/meta_kinks.py --hidden 16 --epochs 8 --json
    python bench/meta_kinks.py --model runs/x/checkpoint/checkpoint.pt   # a trained model, no training
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backbones import MetaConv2d, scale_encoding  # noqa: E402

GRID = 33  # eps values at which the kernels are compared with their affine interpolation


def kink_census(net: torch.nn.Module, eps_min: float, eps_max: float) -> dict:
    """Per hidden unit: kink inside (eps_min, eps_max), active over the whole range, or dead over it; and
    the largest relative distance of a generated kernel from the chord between eps_min and eps_max."""
    inside = active = dead = 0
    bend = []
    grid = torch.linspace(eps_min, eps_max, GRID).tolist()
    for m in net.modules():
        if not isinstance(m, MetaConv2d) or m.hidden == 0:
            continue
        v, c = m.hidden_layer.weight.detach()[:, 0], m.hidden_layer.bias.detach()
        at_min, at_max = v * eps_min + c, v * eps_max + c  # pre-activations at the range's ends
        crosses = (at_min > 0) != (at_max > 0)
        inside += int(crosses.sum())
        active += int(((at_min > 0) & (at_max > 0)).sum())
        dead += int(((at_min <= 0) & (at_max <= 0)).sum())
        # The eps-dependent part U relu(V eps + c) in float64: b cancels, and float32 rounding of b + ...
        # would show as a bend where the span is small.
        u = m.out.detach().double()

        def part(e: float) -> torch.Tensor:
            return u @ torch.relu(v.double() * e + c.double())

        lo, hi = part(eps_min), part(eps_max)
        span = float((hi - lo).norm())
        worst = max(float((part(e) - (lo + (e - eps_min) / (eps_max - eps_min) * (hi - lo))).norm()) for e in grid)
        bend.append(worst / span if span > 0 else 0.0)
    units = inside + active + dead
    return {"meta_convs": len(bend), "units": units, "kink_inside": inside, "active_throughout": active,
            "dead_throughout": dead, "fraction_inside": inside / units if units else 0.0,
            "max_relative_bend": max(bend, default=0.0),
            "median_relative_bend": sorted(bend)[len(bend) // 2] if bend else 0.0}


def trained_net(args) -> tuple[torch.nn.Module, list[int], dict]:
    """Train the job (no evaluation matrix) and return its net, its resolutions and the census at step 0."""
    from jobspec import load_suite
    from orchestrator.engine.job import cpu_threads
    from orchestrator.engine.loop import LocalRuntime, train

    overrides = ["method.name=san", f"method.meta_hidden={args.hidden}", f"train.epochs={args.epochs}",
                 f"train.seed={args.seed}", *args.set]
    suite = load_suite(args.config, overrides)
    job = next(j for j in suite.jobs if j.config.method.name == "san")
    cfg = job.config
    res = list(cfg.data.resolutions)
    from methods import build_method
    torch.manual_seed(0)
    at_init = kink_census(build_method(cfg.method, cfg.model, res).build(10), scale_encoding(min(res)),
                          scale_encoding(max(res)))
    log = (lambda line: print(line, file=sys.stderr)) if not args.quiet else (lambda line: None)
    log(f"training {job.name} (hash {job.hash}): meta_hidden {args.hidden}, {args.epochs} epochs, seed {args.seed}")
    with cpu_threads(cfg.resources.cpus_per_worker):
        trained = train(cfg, LocalRuntime(None, device="cpu", log=log), job.hash)
    return trained.net, res, at_init


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "experiments" / "quickstart.yaml"))
    parser.add_argument("--hidden", type=int, default=8, help="method.meta_hidden (SAN Table 5: 8 or 16)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides")
    parser.add_argument("--model", type=Path, help="census of this model file or checkpoint instead of training")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument("--json", action="store_true", help="the last line is one JSON object")
    args = parser.parse_args()
    start = time.monotonic()
    if args.model:
        from orchestrator.deploy.model_file import load_model
        loaded = load_model(args.model)
        net, res, at_init = loaded.net, list(loaded.config.data.resolutions), None
    else:
        net, res, at_init = trained_net(args)
    eps_min, eps_max = scale_encoding(min(res)), scale_encoding(max(res))
    after = kink_census(net, eps_min, eps_max)
    print(f"training eps range [{eps_min:.4f}, {eps_max:.4f}] ({min(res)}-{max(res)} px); "
          f"{after['meta_convs']} MLP meta convs, {after['units']} hidden units")
    for label, c in (("at init", at_init), ("trained", after)):
        if c is not None:
            print(f"  {label:8s} kink inside: {c['kink_inside']:4d} ({100 * c['fraction_inside']:.1f} %)  "
                  f"active throughout: {c['active_throughout']:4d}  dead throughout: {c['dead_throughout']:4d}  "
                  f"bend max {c['max_relative_bend']:.2e} median {c['median_relative_bend']:.2e}")
    if args.json:
        print(json.dumps({"resolutions": res, "eps_range": [eps_min, eps_max], "hidden": args.hidden,
                          "epochs": None if args.model else args.epochs, "at_init": at_init, "trained": after,
                          "wall_s": round(time.monotonic() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
