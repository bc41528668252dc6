"""One job end to end: train, then evaluate the full accuracy matrix (rank 0); or evaluate the final
checkpoint of a trained model, training nothing."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.matrix import Matrix, evaluate_matrix
from jobspec import JobConfig, training_hash
from methods import build_method
from orchestrator.data.loaders import build_loader, build_train_dataset, build_val_dataset
from orchestrator.engine import checkpoint as ckpt
from orchestrator.engine.gap_features import gap_quantiles
from orchestrator.engine.loop import Runtime, TrainedJob, build_net, calibration_batches_for, train


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


def evaluate(checkpoint: Path, cfg: JobConfig, device: str | None = None) -> JobResult:
    """The matrix (with predictions and, under ``eval.gap_cdf``, GAP quantiles) of the model in
    ``checkpoint/checkpoint.pt``, a final checkpoint of any job that trains the same model as ``cfg``
    (the same training hash), evaluated with ``cfg``'s eval settings. Nothing is trained.

    The net is built as the loop builds it and the random state is the checkpoint's, as when the loop
    resumes a finished job: the numbers are those that job's own evaluation would have computed."""
    runtime = Runtime(device=device, log=lambda msg: None)
    path = Path(checkpoint) / ckpt.CHECKPOINT_FILE
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if training_hash(saved["config"]) != training_hash(cfg):
        raise ckpt.CheckpointMismatch(
            f"refusing to evaluate {path}: it trains another model (training hash {training_hash(saved['config'])}) "
            f"than this job (training hash {training_hash(cfg)})")
    with cpu_threads(cfg.resources.cpus_per_worker):
        method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
        num_classes = cfg.data.num_classes or build_train_dataset(cfg.data).num_classes
        net = build_net(cfg, method, num_classes, runtime.device)
        net.load_state_dict(saved["model"])
        ckpt.set_rng_state(saved["rng"])
        trained = TrainedJob(net=net, method=method, num_classes=num_classes, history=list(saved.get("history", [])),
                             start_epoch=int(saved["epoch"]) + 1)
        start = time.perf_counter()
        matrix = evaluate_job(cfg, trained, runtime)
    return JobResult(trained, matrix, time.perf_counter() - start)
