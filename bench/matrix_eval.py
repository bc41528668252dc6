"""Matrix evaluation cost: resolab's one-pass evaluation vs a naive pass per cell, side by side.

    python bench/matrix_eval.py                       # quickstart's SAN job, CPU
    python bench/matrix_eval.py --job rsnet-resnet_tiny --suite experiments/quickstart.yaml

One pass: every validation image is decoded once and resized to all test resolutions, and cells that
share a route are evaluated once (analysis.matrix.evaluate_matrix). Naive: for every (mode, row,
test resolution) cell, a fresh loader decodes the validation set at that resolution and the net runs
that cell's route. Both give the same numbers (checked here); the untrained net is enough for timing.
"""
from __future__ import annotations

import argparse
import time

import torch

from analysis.matrix import evaluate_matrix, matrix_cells
from backbones import materialize, recalibrate_bn
from methods import build_method
from jobspec import load_suite
from orchestrator.data.loaders import build_loader, build_val_dataset, resolve_data_root
from orchestrator.engine.loop import calibration_batches_for


def naive(net, cfg, modes, test_resolutions, calibration_batches):
    """One full decode-and-forward pass over the validation set per cell."""
    correct = {}
    for key, (route, calibrate) in matrix_cells(net, modes, test_resolutions).items():
        T = key[2]
        loader = build_loader(build_val_dataset(cfg.data, [T]), cfg.eval.batch_size, shuffle=False, seed=0,
                              workers=cfg.data.loader_workers, drop_last=False)
        model = None
        if calibrate:
            plain = materialize(net, T, bn="nearest", eps="ideal", slot=route.conv)
            model = recalibrate_bn(plain, calibration_batches(T)).eval()
        hits = seen = 0
        with torch.no_grad():
            for xs, labels in loader:
                if model is not None:
                    logits = model(xs[0])
                else:
                    net.set_route(route)
                    logits = net.backbone(xs[0])
                    net.set_route(None)
                hits += (logits.argmax(1) == labels).sum().item()
                seen += labels.numel()
        correct[key] = 100.0 * hits / seen
    return correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="experiments/quickstart.yaml")
    parser.add_argument("--job", default="san-resnet_tiny")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    suite = load_suite(args.suite, args.set)
    cfg = next(j.config for j in suite.jobs if j.name == args.job)
    resolve_data_root(cfg.data)  # write the synthetic data first; not part of either timing
    method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
    net = method.build(cfg.data.num_classes or 10).eval()
    modes, tests = method.eval_modes(cfg.eval.calibrate), cfg.test_resolutions()
    device = torch.device("cpu")
    batches = calibration_batches_for(cfg, device)
    cache = {}
    calibration = lambda T: cache.setdefault(T, batches(T))  # noqa: E731 — same batches for both paths

    t0 = time.perf_counter()
    loader = build_loader(build_val_dataset(cfg.data, tests), cfg.eval.batch_size, shuffle=False, seed=0,
                          workers=cfg.data.loader_workers, drop_last=False)
    matrix = evaluate_matrix(net, modes, loader, tests, device, calibration_batches=calibration)
    one_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = naive(net, cfg, modes, tests, calibration)
    per_cell = time.perf_counter() - t0

    frame = matrix.frame.set_index(["mode", "row", "test_res"])["top1"]
    assert all(abs(frame[k] - v) < 1e-9 for k, v in reference.items()), "one-pass and naive matrices differ"
    print(f"{args.job}: {len(reference)} cells ({', '.join(m.name for m in modes)}), "
          f"{len(tests)} test resolutions, {len(build_val_dataset(cfg.data, tests[:1]))} validation images")
    print(f"  one pass (decode once, shared routes) {one_pass:8.1f} s")
    print(f"  naive pass per cell                    {per_cell:8.1f} s")
    print(f"  speed-up                               {per_cell / one_pass:8.1f} x")


if __name__ == "__main__":
    main()
