"""GPU readiness: every CUDA code path a training job takes, exercised in a few minutes, one PASS/FAIL per check.

Run by hand on a CUDA machine (the tests cannot: CI has no GPU):

    python bench/gpu_check.py                  # ResNet-50 at 224 192 160 128 96, batch 64, on cuda
    python bench/gpu_check.py --json           # ... ending with one JSON object
    python bench/gpu_check.py --device cpu     # the same code paths on CPU, tiny (a minute or two)

Checks, each through the project's own functions (``orchestrator.engine.loop``, ``analysis.matrix``, ``resolab run``):
  step <method>    two of the loop's ``train_step`` for individual, parallel, rsnet, san and the quantized
                   RS-Net (W2/A2 on the pre-activation twin), under bf16 autocast with channels_last: finite
                   loss and gradients, bf16 logits, weights still float32 and channels_last;
  matrix <method>  that net's train x test matrix (``evaluate_matrix``, every inference mode of the method,
                   SAN's BN recalibration included) under the same autocast;
  loader           synthetic images -> uint8 batches (pinned on CUDA) -> the loop's ``to_device``
                   (non-blocking copy, normalisation on the device, channels_last), equal to the CPU float path;
  suite gpus=G     ``resolab run experiments/quickstart.yaml --smoke`` as one RS-Net job with
                   resources.gpus_per_worker=G (1 and 0.5) through Ray Tune and MLflow, in a temporary RESOLAB_HOME;
  mfu              the RS-Net step's model FLOP utilisation: FLOPs of one step counted by
                   ``torch.utils.flop_counter.FlopCounterMode``, over the median step time and the GPU's bf16 dense peak.
Exit status: 0 when no check failed, 1 when one did, 2 without a CUDA device (unless --device cpu).
On CPU the suites that ask for a GPU are skipped (``--suite-gpus 0`` runs a CPU suite instead) and the MFU
is skipped for want of a peak (``--peak-tflops`` gives one).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]  # step_time's helpers, and the project when it is not installed

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from analysis.matrix import evaluate_matrix, matrix_cells  # noqa: E402
from backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from jobspec import DataConfig, JobConfig, SyntheticConfig  # noqa: E402
from orchestrator.data.loaders import build_loader, build_train_dataset, build_val_dataset  # noqa: E402
from orchestrator.engine.loop import autocast_for, calibration_batches_for, to_device  # noqa: E402
from records import names  # noqa: E402
from records.store import sqlite_uri  # noqa: E402
from measure import median_times, sync  # noqa: E402
from step_time import Trainer, job  # noqa: E402

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets; matched against
# torch.cuda.get_device_name in this order (H100 PCIe before the SXM part, whose name carries no "SXM").
BF16_PEAK_TFLOPS = [(r"H100.*PCIe", 756.0), (r"H100", 989.0), (r"H200", 989.0), (r"A100", 312.0), (r"\bL4\b", 121.0)]
MFU_GOAL = 0.40  # the target for the ResNet-50 RS-Net step in bf16
SUITE_TIMEOUT_S = 600  # a GPU trial that Ray cannot place waits forever; a suite this slow has failed


class CheckFailed(AssertionError):
    """A check ran and found something wrong."""


class Skipped(Exception):
    """A check that cannot run here; the message says why."""


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float


def run_check(name: str, fn, results: list[Result]):
    """Run one check and print its line at once (a later check that hangs or crashes loses nothing).
    ``fn`` returns (detail, value); the value goes back to the caller (None when the check did not pass)."""
    t0 = time.perf_counter()
    value = None
    try:
        detail, value = fn()
        status = "PASS"
    except Skipped as exc:
        status, detail = "SKIP", str(exc)
    except Exception as exc:  # any failure is this check's result, not the end of the run
        where = traceback.extract_tb(exc.__traceback__)[-1]
        status = "FAIL"
        detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} " \
                 f"[{Path(where.filename).name}:{where.lineno}]"
    results.append(Result(name, status, detail, round(time.perf_counter() - t0, 2)))
    print(f"{status}  {name}: {detail} ({results[-1].seconds:.1f} s)", flush=True)
    return value


# ---------------------------------------------------------------- one job per method


def method_configs(args) -> dict[str, JobConfig]:
    """Every method as step_time builds it, switched to bf16 autocast and channels_last on any device."""
    res = args.resolutions
    cfgs = {"individual": job(args, "individual", res[:1]), "parallel": job(args, "parallel", res),
            "rsnet": job(args, "rsnet", res), "san": job(args, "san", res)}
    cfg = job(args, "rsnet", res)  # W2/A2 as in RS-Nets Table 3: activations need the pre-activation twin
    cfg.model.backbone, cfg.model.weight_bits, cfg.model.act_bits = f"preact_{args.backbone}", 2, 2
    cfgs["rsnet W2/A2"] = cfg
    for cfg in cfgs.values():  # job() already takes bf16 from args.precision; channels_last it sets on CUDA only
        cfg.train.channels_last = True
        cfg.validate()
    return cfgs


def uint8_batch(args, resolutions: list[int]):
    """A loader-shaped batch (uint8 images, one tensor per resolution; labels), pinned where the loader pins."""
    g = torch.Generator().manual_seed(0)
    xs = tuple(torch.randint(0, 256, (args.batch_size, 3, r, r), dtype=torch.uint8, generator=g) for r in resolutions)
    labels = torch.randint(0, args.num_classes, (args.batch_size,), generator=g)
    if args.device.type == "cuda":
        xs, labels = tuple(x.pin_memory() for x in xs), labels.pin_memory()
    return xs, labels


def check_step(args, cfg: JobConfig):
    """Two steps (the second with momentum buffers), then what bf16 + channels_last must leave intact."""
    trainer = Trainer(cfg, args)
    xs, labels = to_device(*uint8_batch(args, cfg.data.resolutions), cfg, args.device)
    logits_dtypes = set()
    hook = trainer.net.register_forward_hook(
        lambda module, inputs, out: logits_dtypes.update(o.dtype for o in (out if isinstance(out, list) else [out])))
    try:
        trainer.step(xs, labels)
        sync(args.device)
        t0 = time.perf_counter()
        out = trainer.step(xs, labels)
        sync(args.device)
        step_s = time.perf_counter() - t0
    finally:
        hook.remove()
    loss = out.total.item()
    if not math.isfinite(loss):
        raise CheckFailed(f"loss {loss}")
    if logits_dtypes != {torch.bfloat16}:
        raise CheckFailed(f"logits {sorted(map(str, logits_dtypes))} under bf16 autocast, not torch.bfloat16")
    params = dict(trainer.net.named_parameters())
    grads = {n: p.grad for n, p in params.items() if p.grad is not None}
    if not grads:
        raise CheckFailed("no parameter received a gradient")
    bad = [n for n, g in grads.items() if not bool(torch.isfinite(g).all())]
    if bad:
        raise CheckFailed(f"non-finite gradients in {len(bad)} tensors, first {bad[0]}")
    not_fp32 = [n for n, p in params.items() if p.dtype != torch.float32]
    if not_fp32:
        raise CheckFailed(f"{len(not_fp32)} weights left float32, first {not_fp32[0]} ({params[not_fp32[0]].dtype})")
    not_nhwc = [n for n, p in params.items() if p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)]
    if not_nhwc:
        raise CheckFailed(f"{len(not_nhwc)} 4-D weights lost channels_last, first {not_nhwc[0]}")
    detail = (f"{cfg.model.backbone} at {' '.join(map(str, cfg.data.resolutions))}, batch {args.batch_size}: "
              f"loss {loss:.3f}, {1e3 * step_s:.0f} ms/step, bf16 logits, {len(grads)}/{len(params)} grads finite, "
              "weights float32 + channels_last")
    return detail, trainer


def check_matrix(args, trainer, data: DataConfig, tests: list[int]):
    """The job's final evaluation on the trained net, every mode of its method, under the step's autocast."""
    cfg = trainer.cfg.model_copy(deep=True)
    cfg.data = data.model_copy(update={"resolutions": list(trainer.cfg.data.resolutions)})
    cfg.eval.batch_size, cfg.eval.calib_batches = args.batch_size, 1
    loader = build_loader(build_val_dataset(cfg.data, tests), args.batch_size, shuffle=False, seed=0,
                          workers=cfg.data.loader_workers, drop_last=False)
    modes = trainer.state.method.eval_modes(True)
    try:
        with autocast_for(cfg, args.device):
            matrix = evaluate_matrix(trainer.net, modes, loader, tests, args.device,
                                     calibration_batches=calibration_batches_for(cfg, args.device), max_batches=1)
    finally:
        trainer.net.train()  # evaluation leaves eval mode; later steps on this net train
    cells = len(matrix_cells(trainer.net, modes, tests))
    top1 = matrix.frame["top1"]
    if len(matrix.frame) != cells or not top1.between(0, 100).all():
        raise CheckFailed(f"{len(matrix.frame)} of {cells} cells, top-1 {top1.min()}..{top1.max()}")
    return f"{cells} cells ({', '.join(m.name for m in modes)}) x test {' '.join(map(str, tests))}", None


# ---------------------------------------------------------------- data path


def check_loader(args, data: DataConfig):
    """One training batch through the real loader and the loop's to_device, against the CPU float path."""
    cfg = JobConfig()
    cfg.data, cfg.train.channels_last = data, True
    loader = build_loader(build_train_dataset(data), args.batch_size, shuffle=True, seed=0,
                          workers=data.loader_workers, drop_last=True)
    xs, labels = next(iter(loader))
    del loader  # its workers (if any) end with it
    if any(x.dtype != torch.uint8 for x in xs):
        raise CheckFailed(f"the loader gave {xs[0].dtype}, not uint8")
    pinned = all(x.is_pinned() for x in xs)
    if args.device.type == "cuda" and not pinned:
        raise CheckFailed("the loader's batches are not in pinned memory")
    t0 = time.perf_counter()
    on_device, _ = to_device(xs, labels, cfg, args.device)
    sync(args.device)
    copy_ms = 1e3 * (time.perf_counter() - t0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    worst = 0.0
    for x, y in zip(xs, on_device):
        if y.dtype != torch.float32 or y.device.type != args.device.type:
            raise CheckFailed(f"to_device gave {y.dtype} on {y.device}")
        if not y.is_contiguous(memory_format=torch.channels_last):
            raise CheckFailed("to_device did not give channels_last")
        worst = max(worst, (y.cpu() - (x.float() / 255 - mean) / std).abs().max().item())
    if worst > 1e-5:
        raise CheckFailed(f"on-device normalisation differs from the CPU float path by {worst:.2e} (> 1e-5)")
    shapes = " ".join(f"{x.shape[-1]}" for x in xs)
    return (f"batch {args.batch_size} at {shapes} px: uint8{', pinned' if pinned else ''} -> float32 channels_last "
            f"on {args.device} in {copy_ms:.1f} ms, max |diff| vs CPU float path {worst:.1e}"), None


# ---------------------------------------------------------------- the real Ray path


def check_suite(args, gpus: float):
    """`resolab run` of the quickstart's smoke RS-Net with gpus_per_worker=gpus, in a throw-away RESOLAB_HOME."""
    if gpus > 0 and args.device.type != "cuda":
        raise Skipped(f"resources.gpus_per_worker={gpus:g} needs a CUDA device (--suite-gpus 0 runs a CPU suite)")
    with tempfile.TemporaryDirectory(prefix="resolab-gpu-check-") as home:
        cmd = [sys.executable, "-m", "orchestrator.cli.main", "run", "experiments/quickstart.yaml", "--smoke",
               "--set", "method.name=rsnet", "--set", f"resources.gpus_per_worker={gpus:g}",
               "--set", "train.precision=bf16", "--set", "train.channels_last=true"]
        env = {**os.environ, "RESOLAB_HOME": home, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        env.pop("MLFLOW_TRACKING_URI", None)  # the run's store is the temporary one
        # Its own session: on a timeout the driver and the Ray processes it started end together.
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=SUITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CheckFailed(f"no result after {SUITE_TIMEOUT_S} s (does Ray see the GPU? "
                              "`python -c 'import ray; ray.init(); print(ray.cluster_resources())'`)") from None
        if proc.returncode != 0:
            raise CheckFailed(f"exit {proc.returncode}: {output.strip().splitlines()[-1] if output.strip() else ''}")
        detail = recorded_job(sqlite_uri(Path(home) / 'mlflow.db'), gpus)
    return f"{' '.join(cmd[3:])}: {detail}", None


def recorded_job(tracking_uri: str, gpus: float) -> str:
    """What the suite left in MLflow: one FINISHED job run with this gpus_per_worker and its matrix."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id], names.JOB_FILTER) if experiment else []
    if len(runs) != 1 or runs[0].info.status != "FINISHED":
        raise CheckFailed(f"MLflow holds {[r.info.status for r in runs]} job runs, not one FINISHED")
    run = runs[0]
    asked = float(run.data.params.get("resources.gpus_per_worker", "nan"))
    cells = [k for k in run.data.metrics if k.startswith("acc1/train")]
    if asked != gpus or not cells:
        raise CheckFailed(f"the run has gpus_per_worker={asked:g} and {len(cells)} matrix cells")
    return f"job run FINISHED, {len(cells)} matrix cells recorded"


# ---------------------------------------------------------------- model FLOP utilisation


def bf16_peak_tflops(args) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if args.device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(args.device)
    return next((peak for pattern, peak in BF16_PEAK_TFLOPS if re.search(pattern, name)), None)


def check_mfu(args, trainer, report: dict):
    """FLOPs of one step (forward + backward; the optimiser's elementwise work counts nothing) over the median
    step time and the bf16 peak. ``report`` receives the figures for --json."""
    xs, labels = to_device(*uint8_batch(args, trainer.cfg.data.resolutions), trainer.cfg, args.device)
    with FlopCounterMode(display=False) as counter:
        trainer.step(xs, labels)
    flops = counter.get_total_flops()
    step_s = median_times({"rsnet": lambda: trainer.step(xs, labels)}, args)["rsnet"]
    achieved = flops / step_s / 1e12
    peak = bf16_peak_tflops(args)
    report.update(backbone=trainer.cfg.model.backbone, resolutions=trainer.cfg.data.resolutions,
                  batch_size=args.batch_size, gflop_per_step=round(flops / 1e9, 2),
                  step_ms=round(1e3 * step_s, 3), achieved_tflops=round(achieved, 3),
                  peak_tflops=peak, mfu=round(achieved / peak, 4) if peak else None)
    figures = (f"RS-Net {trainer.cfg.model.backbone} at {' '.join(map(str, trainer.cfg.data.resolutions))}, "
               f"batch {args.batch_size}: {flops / 1e9:.1f} GFLOP/step in {1e3 * step_s:.1f} ms = "
               + (f"{achieved:.1f} TFLOP/s" if achieved >= 1 else f"{1e3 * achieved:.2f} GFLOP/s"))
    if peak is None:
        where = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "a CPU"
        raise Skipped(f"{figures}; no bf16 peak known for {where} (give --peak-tflops)")
    verdict = "meets" if achieved / peak >= MFU_GOAL else "below"
    return f"{figures} / {peak:g} peak = MFU {100 * achieved / peak:.1f} % ({verdict} the {100 * MFU_GOAL:.0f} % goal)", None


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu, which runs the same checks tiny")
    p.add_argument("--json", action="store_true", help="end with one JSON object of every check and the MFU")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of this device, TFLOP/s")
    p.add_argument("--suite-gpus", type=float, nargs="*", default=[1.0, 0.5],
                   help="resources.gpus_per_worker of each one-job suite (default 1 0.5; 0 runs one on CPU)")
    p.add_argument("--iters", type=int, default=None, help="timed MFU steps (default 10 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed MFU steps first (default 3 on CUDA, 1 on CPU)")
    args = p.parse_args(argv)
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device {args.device!r} is not a torch device; use cuda or cpu")
    if args.device.type not in ("cuda", "cpu"):
        p.error(f"--device {args.device}: use cuda (cuda:N) or cpu")
    cuda = args.device.type == "cuda"
    # What step_time's helpers read: ResNet-50 at the papers' resolutions on a GPU; a tiny net on CPU.
    args.backbone, args.small_input = ("resnet50", False) if cuda else ("resnet_tiny", True)
    args.resolutions = [224, 192, 160, 128, 96] if cuda else [32, 24, 16]
    args.batch_size, args.num_classes = (64, 1000) if cuda else (8, 10)
    args.precision = "bf16"
    # Test resolutions beyond, at and between the training ones (interpolated BN, SAN's BN recalibration).
    args.test_resolutions = [256, 224, 176, 160, 112, 96, 64] if cuda else [40, 32, 28, 16]
    args.iters = args.iters or (10 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    return args


def data_config(args, root: Path) -> DataConfig:
    """The built-in synthetic images: a couple of batches (at least two images per class: ImageFolder refuses an
    empty class folder), about as large as the largest test resolution."""
    cuda = args.device.type == "cuda"
    size, classes = ((160, 288) if cuda else (40, 56)), 10
    count = max(2 * args.batch_size, 2 * classes)
    return DataConfig(dataset="synthetic", root=str(root), num_classes=classes, resolutions=list(args.resolutions),
                      loader_workers=2 if cuda else 0, synthetic=SyntheticConfig(
                          num_train=count, num_val=count, min_size=size[0], max_size=size[1]))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check needs a CUDA device (torch.cuda.is_available() is False here); "
              "--device cpu runs the same checks on CPU", file=sys.stderr)
        return 2
    if args.device.type == "cuda" and (args.device.index or 0) >= torch.cuda.device_count():
        print(f"gpu_check: --device {args.device}, but torch sees {torch.cuda.device_count()} CUDA device(s)",
              file=sys.stderr)
        return 2
    cuda = args.device.type == "cuda"
    device_name = torch.cuda.get_device_name(args.device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {device_name} | torch {torch.__version__} | bf16 autocast, channels_last | {args.backbone} at "
          f"{' '.join(map(str, args.resolutions))}, batch {args.batch_size}", flush=True)
    results: list[Result] = []
    mfu: dict = {}
    with tempfile.TemporaryDirectory(prefix="resolab-gpu-check-data-") as tmp:
        data = data_config(args, Path(tmp) / "synthetic")
        run_check("loader", lambda: check_loader(args, data), results)
        trainers = {}
        for name, cfg in method_configs(args).items():
            trainers[name] = run_check(f"step {name}", lambda cfg=cfg: check_step(args, cfg), results)
            if trainers[name] is not None:
                run_check(f"matrix {name}", lambda t=trainers[name]: check_matrix(args, t, data, args.test_resolutions), results)
            if name != "rsnet":
                trainers.pop(name)  # free its memory; the RS-Net's net is measured below
        if trainers.get("rsnet") is not None:
            run_check("mfu", lambda: check_mfu(args, trainers["rsnet"], mfu), results)
        trainers.clear()
    for gpus in args.suite_gpus:
        run_check(f"suite gpus_per_worker={gpus:g}", lambda g=gpus: check_suite(args, g), results)
    failed = [r.name for r in results if r.status == "FAIL"]
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped"
          + (f": {', '.join(failed)}" if failed else ""), flush=True)
    if args.json:
        print(json.dumps({"device": device_name, "torch": torch.__version__, "passed": not failed,
                          "checks": [asdict(r) for r in results], "mfu": mfu or None}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
