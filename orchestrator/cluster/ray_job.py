"""One job as a Ray Tune trial (the Ray Train V2 pattern).

The trial function is the job's driver. A one-worker job runs the loop right inside the trial and
reports through ``ray.tune`` (Train's local mode would cost nothing extra but cannot resume from
storage; a TorchTrainer with one worker costs ~10 s of start-up). A job with N > 1 workers launches a
``TorchTrainer`` (DDP: gloo on CPU, nccl on GPU) from the trial; rank 0's reports reach Tune through
``TuneReportCallback``.

Nothing is lost: rank 0 also writes every epoch's checkpoint atomically to a stable per-job directory
``<storage>/<suite>/jobs/<job>-<hash>/``, so a later ``resolab run`` of the same suite resumes the job
from there even though Tune gives the new invocation fresh trial directories. Retries inside one
invocation (``max_failures``) resume from Ray's own last checkpoint (Ray keeps only that one). The
stable directory is never cleared: after the job finishes it holds the final checkpoint, from which a
job that trains the same model and only evaluates it differently is evaluated without training
(``orchestrator.cluster.evaluate_only``): its trial runs ``orchestrator.engine.job.evaluate`` on that
checkpoint instead of the loop.

No MLflow writes happen here: rank 0 writes the job's result files into its stable directory
(``orchestrator.engine.results``), the last report names that folder, and the suite driver (a single
process) records it, so SQLite never sees concurrent writers.
"""
from __future__ import annotations

import os
from pathlib import Path


from backbones.complexity import count_madds
from jobspec import ConfigError, job_from_dict
from orchestrator.engine import checkpoint as ckpt
from orchestrator.engine.checkpoint import CheckpointMismatch
from orchestrator.data.loaders import CorruptImageError, DatasetError
from orchestrator.engine.job import evaluate, run_job
from orchestrator.engine.loop import Runtime, TrainingDiverged
from records.layout import job_dir
from orchestrator.engine.results import write_result

# Fault injection for tests and drills: the named rank exits hard once, at the start of that epoch.
CRASH_EPOCH_ENV = "RESOLAB_CRASH_AT_EPOCH"
CRASH_RANK_ENV = "RESOLAB_CRASH_RANK"


class _RayRuntime(Runtime):
    """Common to both kinds of Ray runtime: the stable checkpoint directory and fault injection."""

    def __init__(self, stable_dir: Path, device: str | None = None):
        super().__init__(device=device, log=lambda msg: None)
        self.stable_dir = stable_dir

    def _ray_checkpoint(self):
        raise NotImplementedError

    def restore(self) -> Path | None:
        checkpoint = self._ray_checkpoint()
        if checkpoint is not None:  # a retry inside this invocation
            return Path(checkpoint.to_directory())
        if (self.stable_dir / ckpt.CHECKPOINT_FILE).exists():  # an earlier invocation of the suite
            return self.stable_dir
        return None

    def keep(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        """Copy rank 0's checkpoint to the stable directory; then the fault-injection point."""
        if checkpoint_dir is not None:
            ckpt.copy(checkpoint_dir, self.stable_dir)
        self.maybe_crash(int(metrics["epoch"]) + 1)

    def maybe_crash(self, next_epoch: int) -> None:
        if os.environ.get(CRASH_EPOCH_ENV) is None:
            return
        crash_rank = int(os.environ.get(CRASH_RANK_ENV, self.world_size - 1))
        marker = self.stable_dir / f".crashed-rank{crash_rank}"
        if next_epoch == int(os.environ[CRASH_EPOCH_ENV]) and not marker.exists():
            if self.rank == crash_rank:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                os._exit(1)


class TuneRuntime(_RayRuntime):
    """A one-worker job running inside its Tune trial."""

    def _ray_checkpoint(self):
        import ray.tune
        return ray.tune.get_checkpoint()

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.tune
        self.keep(metrics, checkpoint_dir)
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(checkpoint_dir)))


class TrainRuntime(_RayRuntime):
    """One rank of a DDP job under Ray Train."""

    def __init__(self, stable_dir: Path):
        import ray.train
        import ray.train.torch
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        super().__init__(stable_dir, device=str(ray.train.torch.get_device()))

    def _ray_checkpoint(self):
        import ray.train
        return ray.train.get_checkpoint()

    def wrap(self, net):
        import ray.train.torch
        return ray.train.torch.prepare_model(net, move_to_device=False, parallel_strategy="ddp")

    def any_rank(self, flag: bool) -> bool:
        import torch
        import torch.distributed as dist
        flags = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags.item())

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.train
        self.keep(metrics, checkpoint_dir)
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


def _final_report(cfg, result, report, stable_dir: Path) -> None:
    """The last report: rank 0 writes the matrix, predictions, GAP quantiles and MAdds per test
    resolution into the job's stable directory and names it; the suite driver logs it to MLflow.

    Nothing large travels through Ray (ImageNet's per-image predictions are megabytes), no run ids or
    store access are needed on workers, and it works wherever checkpoints already do: the storage is
    shared between nodes whenever the cluster has several. Other ranks report no folder."""
    folder = None
    if result.matrix is not None:
        madds = {t: count_madds(result.trained.net, t) for t in cfg.test_resolutions()}
        folder = str(write_result(stable_dir, result.matrix, madds, result.trained.num_classes,
                                  result.trained.start_epoch, result.eval_time_s))
    report({"done": True, "result_dir": folder})


# Errors that a retry cannot fix: the job fails at once with its reason instead of being retried.
DETERMINISTIC_ERRORS = (TrainingDiverged, CheckpointMismatch, DatasetError, ConfigError)


def train_worker(config: dict) -> None:
    """Ray Train's per-worker function for a multi-worker job."""
    import ray.train
    cfg = job_from_dict(config["job"])
    runtime = TrainRuntime(Path(config["stable_dir"]))
    try:
        result = run_job(cfg, runtime, config["hash"])
    except DETERMINISTIC_ERRORS as exc:
        if isinstance(exc, CorruptImageError):
            raise  # one rank's shard: the others are inside a collective and cannot report with it
        # Every rank gets here alike (set-up errors, or the collective divergence check), so all of
        # them report and return, and Ray Train does not spend max_failures restarts on a hopeless job.
        ray.train.report({"done": True, "failed": f"{type(exc).__name__}: {exc}"})
        return
    _final_report(cfg, result, ray.train.report, runtime.stable_dir)


def job_trial(trial_config: dict, jobs: dict, storage: str, suite: str, env: dict[str, str]) -> None:
    """The Tune trainable: trial_config = {"job": name}; ``jobs`` maps name -> {"config", "hash", and for a
    job that only evaluates, "evaluate": the directory of the final checkpoint it evaluates};
    ``env`` is the driver's ``forwarded_env()`` (trial processes do not inherit the driver's environment)."""
    os.environ.update(env)
    spec = jobs[trial_config["job"]]
    cfg = job_from_dict(spec["config"])
    stable = job_dir(storage, suite, trial_config["job"], spec["hash"])
    device = "cuda" if cfg.resources.gpus_per_worker > 0 else "cpu"
    if spec.get("evaluate") or cfg.resources.workers == 1:
        import ray.tune
        try:
            if spec.get("evaluate"):  # a final checkpoint of this model: evaluated, nothing trained
                result = evaluate(Path(spec["evaluate"]), cfg, device=device)
            else:
                result = run_job(cfg, TuneRuntime(stable, device=device), spec["hash"])
        except DETERMINISTIC_ERRORS as exc:
            ray.tune.report({"done": True, "failed": f"{type(exc).__name__}: {exc}"})
            return
        _final_report(cfg, result, ray.tune.report, stable)
        return
    _run_torch_trainer(cfg, spec, stable, storage, suite, trial_config["job"])


def _run_torch_trainer(cfg, spec, stable: Path, storage: str, suite: str, name: str) -> None:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = cfg.resources.gpus_per_worker > 0
    per_worker = {"CPU": cfg.resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = cfg.resources.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": spec["config"], "hash": spec["hash"], "stable_dir": str(stable)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.resources.workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"{name}-{spec['hash']}", storage_path=str(Path(storage) / suite / "train"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.resources.max_failures),
            # A restart resumes from the latest checkpoint only; older ones would pile up, one per epoch.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
            worker_runtime_env={"env_vars": forwarded_env()},
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    trainer.fit()


def forwarded_env() -> dict[str, str]:
    """Driver settings that must reach trials and workers: where project state lives, fault injection."""
    keep = (CRASH_EPOCH_ENV, CRASH_RANK_ENV, "RESOLAB_HOME", "PYTHONPATH")
    return {k: os.environ[k] for k in keep if k in os.environ}
