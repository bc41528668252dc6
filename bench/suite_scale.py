"""Suite scale benchmark: what does a suite cost per job beyond training and evaluating it?

Runs suites of N one-step jobs (a tiny ResNet, one training step, one evaluation batch at two test
resolutions; a grid over ``train.seed``) through ``resolab run``'s own driver (``run_suite``), in this
process, on a local Ray started for each N, with a fresh SQLite tracking store and storage folder.
The synthetic data is written once, before the first timing. Per N it reports:

  - driver wall: ``run_suite`` from the call to its return (store checks, planning, Ray start, every trial,
    the MLflow records);
  - overhead per job, in slot-seconds: the slots (jobs that fit side by side) times the time from Ray's
    start to the last job's end, less the seconds the jobs spent in training epochs, validation and the
    final matrix, over N. Trial process start-up, data set-up, Ray's reporting, idle slots and the
    driver's MLflow records all count. Also the driver's own view (``SuiteOutcome.overhead_line``):
    trial start to final report, less training and evaluation, over N;
  - MLflow calls per job: the driver's calls of ``MlflowClient`` methods (outermost calls only);
  - the driver's peak RSS (VmHWM, reset before each N where Linux allows it).

It also times ``resolab run SUITE --dry-run`` of a 10,000-job grid (``--dryrun-jobs``) as a subprocess,
interpreter start-up included, as a user sees it.

    python bench/suite_scale.py [--sizes 10 100 1000] [--json]

With ``--json`` the last line is one JSON object: per_job_overhead_s (at N = 100, or the largest N run),
dryrun_10k_s, and the per-N figures under "sizes".
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
# One-step jobs: the smallest job that still goes through every part of a real one (data, a training step,
# a validation batch, a checkpoint, the matrix, predictions, the MLflow record).
ONE_STEP_JOB = {
    "model": {"backbone": "resnet_tiny", "small_input": True},
    "method": {"name": "parallel"},
    "data": {"dataset": "synthetic", "resolutions": [32, 16], "loader_workers": 0,
             "synthetic": {"num_train": 32, "num_val": 16, "min_size": 32, "max_size": 40}},
    "train": {"epochs": 1, "max_steps_per_epoch": 1, "batch_size": 16, "precision": "fp32"},
    "eval": {"test_resolutions": [32, 16], "max_batches": 1, "batch_size": 16, "calib_batches": 1},
    "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
}


def write_suite(folder: Path, name: str, jobs: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "job": ONE_STEP_JOB, "grid": {"train.seed": list(range(jobs))}}))
    return path


def write_grid(folder: Path, jobs: int) -> Path:
    """A grid of ``jobs`` quickstart jobs (two methods x seeds x learning rates), for the dry run."""
    per_method = jobs // 2
    lrs = next(k for k in (50, 25, 10, 5, 2, 1) if per_method % k == 0)
    grid = {"method.name": ["parallel", "rsnet"], "train.seed": list(range(per_method // lrs)),
            "train.lr": [round(0.001 * (i + 1), 4) for i in range(lrs)]}
    path = folder / f"grid{jobs}.yaml"
    path.write_text(yaml.safe_dump({"name": f"grid{jobs}", "extends": str(PROJECT / "experiments/quickstart.yaml"),
                                    "grid": grid}))
    return path


def time_dry_run(path: Path) -> tuple[float, int]:
    """Seconds of ``resolab run PATH --dry-run`` in a fresh interpreter, and the jobs it listed."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys; from orchestrator.cli.main import main; sys.exit(main())",
                           "run", str(path), "--dry-run"], capture_output=True, text=True, cwd=PROJECT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"dry run of {path} failed: {done.stderr.strip()[-500:]}")
    first = done.stdout.splitlines()[0]  # "<suite>: N jobs (<path>)"
    return seconds, int(first.split(": ", 1)[1].split()[0])


class MlflowCalls:
    """Counts the driver's calls of MlflowClient's public methods; a method calling another counts once."""

    def __init__(self):
        from mlflow.tracking import MlflowClient
        self.cls, self.count, self.saved = MlflowClient, 0, {}
        self.local = threading.local()

    def __enter__(self):
        for name, fn in vars(self.cls).items():
            if callable(fn) and not name.startswith("_"):
                self.saved[name] = fn
                setattr(self.cls, name, self._counted(fn))
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(self.cls, name, fn)

    def _counted(self, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            outer = not getattr(self.local, "inside", False)
            if outer:
                self.count += 1
                self.local.inside = True
            try:
                return fn(*args, **kwargs)
            finally:
                if outer:
                    self.local.inside = False
        return counted


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    try:  # Linux: 5 resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_size(folder: Path, jobs: int) -> dict:
    import ray

    from jobspec import load_suite
    from orchestrator.cluster.suite import RunOptions, run_suite

    suite = load_suite(write_suite(folder, f"scale{jobs}", jobs))
    work = Path(tempfile.mkdtemp(prefix=f"n{jobs}-", dir=folder))
    options = RunOptions(tracking_uri=f"sqlite:///{work / 'mlflow.db'}", storage=str(work / "storage"),
                         live_interval=3600.0)
    resettable = reset_peak_rss()
    with MlflowCalls() as calls:
        start = time.perf_counter()
        outcome = run_suite(suite, options, stream=io.StringIO())
        driver_s = time.perf_counter() - start
    slots = min(jobs, int(ray.cluster_resources().get("CPU", 1)))  # one CPU per job
    ray.shutdown()
    if len(outcome.finished) != jobs:
        raise SystemExit(f"N={jobs}: {len(outcome.finished)} of {jobs} jobs finished; failed: "
                         f"{dict(list(outcome.failed.items())[:3])}")
    return {
        "jobs": jobs, "driver_wall_s": round(driver_s, 1), "ray_wall_s": round(outcome.wall_s, 1), "slots": slots,
        "trial_processes": outcome.trial_processes,
        "train_eval_s": round(outcome.train_s, 2),
        "overhead_per_job_s": round((slots * outcome.wall_s - outcome.train_s) / jobs, 3),
        "trial_overhead_per_job_s": round((outcome.trial_s - outcome.train_s) / jobs, 3),
        "driver_wall_per_job_s": round(driver_s / jobs, 3),
        "mlflow_calls_per_job": round(calls.count / jobs, 1),
        "peak_rss_mib": round(_status_kib("VmHWM") / 1024), "peak_rss_since": "N start" if resettable else "process start",
    }


def show(row: dict) -> None:
    print(f"N={row['jobs']:>5}  driver wall {row['driver_wall_s']:7.1f} s ({row['driver_wall_per_job_s']:.2f} s/job)  "
          f"slots {row['slots']} ({row['trial_processes']} trial processes)  training+evaluation {row['train_eval_s']:.1f} s  "
          f"overhead {row['overhead_per_job_s']:.2f} slot-s/job (in trials {row['trial_overhead_per_job_s']:.2f})  "
          f"MLflow calls {row['mlflow_calls_per_job']:.1f}/job  driver peak RSS {row['peak_rss_mib']} MiB",
          flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="suite sizes N (default 10 100)")
    p.add_argument("--dryrun-jobs", type=int, default=10000, help="jobs in the dry-run grid (default 10000)")
    p.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="suite-scale-") as tmp:
        folder = Path(tmp)
        os.environ["RESOLAB_HOME"] = str(folder / "home")  # the synthetic data, written once
        dry_s, listed = time_dry_run(write_grid(folder, args.dryrun_jobs))
        print(f"dry run of a {listed}-job grid: {dry_s:.2f} s (resolab run --dry-run, a fresh interpreter)", flush=True)
        with contextlib.redirect_stdout(sys.stderr):
            run_size(folder, 1)  # writes the synthetic data; not a figure
        rows = []
        for jobs in args.sizes:
            rows.append(run_size(folder, jobs))
            show(rows[-1])
    if args.json:
        headline = next((r for r in rows if r["jobs"] == 100), rows[-1])
        print(json.dumps({"per_job_overhead_s": headline["overhead_per_job_s"], "at_jobs": headline["jobs"],
                          "dryrun_10k_s": round(dry_s, 2), "dryrun_jobs": listed, "sizes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
