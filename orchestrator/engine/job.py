"""One job end to end: train, then evaluate the full accuracy matrix (rank 0)."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from analysis.matrix import Matrix, evaluate_matrix
from jobspec import JobConfig
from orchestrator.data.loaders import build_loader, build_val_dataset
from orchestrator.engine.gap_features import gap_quantiles
from orchestrator.engine.loop import Runtime, TrainedJob, calibration_batches_for, train


@dataclass
class JobResult:
    trained: TrainedJob
    matrix: Matrix | None  # None on ranks other than 0; matrix.predictions holds the per-image top-1
    eval_time_s: float = 0.0


def evaluate_job(cfg: JobConfig, trained: TrainedJob, runtime: Runtime, progress=None) -> Matrix:
    """``progress``: wraps the validation loader to report on it (``resolab evaluate-model``'s progress lines)."""
    test_resolutions = cfg.test_resolutions()
    val_set = build_val_dataset(cfg.data, test_resolutions)
    loader = build_loader(val_set, cfg.eval.batch_size, shuffle=False, seed=0, workers=cfg.data.loader_workers,
                          drop_last=False)
    if progress is not None:
        loader = progress(loader)
    matrix = evaluate_matrix(trained.net, trained.method.eval_modes(cfg.eval.calibrate), loader, test_resolutions,
                             runtime.device, calibration_batches=calibration_batches_for(cfg, runtime.device),
                             max_batches=cfg.eval.max_batches)
    if cfg.eval.gap_cdf:
        matrix.gap_cdf = gap_quantiles(trained.net, cfg, runtime.device)
    return matrix


@contextlib.contextmanager
def cpu_threads(cpus_per_worker: float):
    """torch's intra-op threads = the CPUs the job asked for per worker (at least 1), restored after.

    A CPU reduction's result depends on how it is split over threads, so the same config gives the
    same numbers on any machine only with the same thread count: by default torch takes every core
    of the machine, Ray's workers whatever OMP_NUM_THREADS says.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus_per_worker)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_job(cfg: JobConfig, runtime: Runtime, job_hash: str) -> JobResult:
    with cpu_threads(cfg.resources.cpus_per_worker):
        trained = train(cfg, runtime, job_hash)
        start = time.perf_counter()
        matrix = evaluate_job(cfg, trained, runtime) if runtime.rank == 0 else None
    return JobResult(trained, matrix, time.perf_counter() - start)
