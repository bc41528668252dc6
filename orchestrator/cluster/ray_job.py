"""One job as a Ray Tune trial (the Ray Train V2 pattern).

The trial function is the job's driver. A one-worker job runs the loop right inside the trial and
reports through ``ray.tune`` (Train's local mode would cost nothing extra but cannot resume from
storage; a TorchTrainer with one worker costs ~10 s of start-up). A job with N > 1 workers launches a
``TorchTrainer`` (DDP: gloo on CPU, nccl on GPU) from the trial; rank 0's reports reach Tune through
``TuneReportCallback``.

Nothing is lost: rank 0 also copies every epoch's checkpoint whole to a stable per-job folder on storage,
``<storage>/<suite>/jobs/<job>-<hash>/`` (a path every node sees, or an object-store URI:
``records.storage``), so a later ``resolab run`` of the same suite resumes the job from there even though
Tune gives the new invocation fresh trial directories. Retries inside one invocation (``max_failures``,
a lost node included) resume from Ray's own last checkpoint (Ray keeps only that one). The stable folder
is never cleared: after the job finishes it holds the final checkpoint, from which a job that trains the
same model and only evaluates it differently is evaluated without training
(``orchestrator.cluster.evaluate_only``): its trial runs ``orchestrator.engine.job.evaluate`` on that
checkpoint instead of the loop. Each process works in a folder of its own node (``scratch``) and reads
and writes storage only through ``records.storage``.

No MLflow writes happen here: rank 0 publishes the job's result files to its stable folder
(``orchestrator.engine.results``), the last report names that folder, and the suite driver (a single
process) records it, so SQLite never sees concurrent writers.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from backbones.complexity import count_madds
from jobspec import ConfigError, job_from_dict
from orchestrator.engine import checkpoint as ckpt
from orchestrator.engine.checkpoint import CheckpointMismatch
from orchestrator.data.loaders import CorruptImageError, DatasetError
from orchestrator.engine.job import evaluate, run_job
from orchestrator.engine.loop import Runtime, TrainingDiverged
from orchestrator.cluster.trial_env import CRASH_EPOCH_ENV, CRASH_RANK_ENV, forwarded_env
from orchestrator.engine.results import publish_result, write_result
from records import storage
from records.layout import job_dir



@contextlib.contextmanager
def scratch_folder():
    """A folder on this node for the files a process reads and writes before (or after) storage has them."""
    folder = Path(tempfile.mkdtemp(prefix="resolab-job-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _RayRuntime(Runtime):
    """Common to both kinds of Ray runtime: the stable folder on storage, a scratch folder on this node,
    and fault injection."""

    def __init__(self, stable: str, scratch: Path, device: str | None = None):
        super().__init__(device=device, log=lambda msg: None)
        self.stable, self.scratch = stable, scratch

    def _ray_checkpoint(self):
        raise NotImplementedError

    def restore(self) -> Path | None:
        checkpoint = self._ray_checkpoint()
        if checkpoint is not None:  # a retry inside this invocation
            return Path(checkpoint.to_directory())
        if not storage.is_remote(self.stable):  # an earlier invocation of the suite
            return Path(self.stable) if (Path(self.stable) / ckpt.CHECKPOINT_FILE).exists() else None
        here = self.scratch / "restored"
        found = storage.download(storage.join(self.stable, ckpt.CHECKPOINT_FILE), here / ckpt.CHECKPOINT_FILE)
        return here if found else None

    def keep(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        """Copy rank 0's checkpoint to the stable folder; then the fault-injection point."""
        if checkpoint_dir is not None:
            storage.upload(Path(checkpoint_dir) / ckpt.CHECKPOINT_FILE, storage.join(self.stable, ckpt.CHECKPOINT_FILE))
        self.maybe_crash(int(metrics["epoch"]) + 1)

    def maybe_crash(self, next_epoch: int) -> None:
        if os.environ.get(CRASH_EPOCH_ENV) is None:
            return
        crash_rank = int(os.environ.get(CRASH_RANK_ENV, self.world_size - 1))
        marker = storage.join(self.stable, f".crashed-rank{crash_rank}")
        if next_epoch == int(os.environ[CRASH_EPOCH_ENV]) and not storage.exists(marker):
            if self.rank == crash_rank:
                storage.write_text(marker, "")
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

    def __init__(self, stable: str, scratch: Path):
        import ray.train
        import ray.train.torch
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        super().__init__(stable, scratch, device=str(ray.train.torch.get_device()))

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


def _final_report(cfg, result, report, stable: str, scratch: Path, name: str) -> None:
    """The last report: rank 0 writes the matrix, predictions, GAP quantiles, MAdds per test resolution
    and the matrix's figures (titled with the job's ``name``), publishes them to the job's stable folder on storage and names it; the suite driver
    logs it to MLflow.

    Nothing large travels through Ray (ImageNet's per-image predictions are megabytes), no run ids or
    store access are needed on workers, and it works wherever checkpoints already do: storage is one
    that every node reaches. Other ranks report no folder."""
    folder = None
    if result.matrix is not None:
        madds = {t: count_madds(result.trained.net, t) for t in cfg.test_resolutions()}
        local = Path(stable) if not storage.is_remote(stable) else scratch / "result"
        write_result(local, result.matrix, madds, result.trained.num_classes, result.trained.start_epoch,
                     result.eval_time_s, title=name)
        folder = publish_result(local, stable)
    report({"done": True, "result_dir": folder})


# Errors that a retry cannot fix: the job fails at once with its reason instead of being retried.
DETERMINISTIC_ERRORS = (TrainingDiverged, CheckpointMismatch, DatasetError, ConfigError)


def train_worker(config: dict) -> None:
    """Ray Train's per-worker function for a multi-worker job."""
    import ray.train
    cfg = job_from_dict(config["job"])
    with scratch_folder() as scratch:
        runtime = TrainRuntime(config["stable_dir"], scratch)
        try:
            result = run_job(cfg, runtime, config["hash"])
        except DETERMINISTIC_ERRORS as exc:
            if isinstance(exc, CorruptImageError):
                raise  # one rank's shard: the others are inside a collective and cannot report with it
            # Every rank gets here alike (set-up errors, or the collective divergence check), so all of
            # them report and return, and Ray Train does not spend max_failures restarts on a hopeless job.
            ray.train.report({"done": True, "failed": f"{type(exc).__name__}: {exc}"})
            return
        _final_report(cfg, result, ray.train.report, runtime.stable, scratch, config["name"])


def job_trial(trial_config: dict, jobs: dict, storage_root: str, suite: str, env: dict[str, str]) -> None:
    """The Tune trainable: trial_config = {"job": name}; ``jobs`` maps name -> {"config", "hash", and for a
    job that only evaluates, "evaluate": the directory of the final checkpoint it evaluates};
    ``env`` is the driver's ``forwarded_env()`` (trial processes do not inherit the driver's environment)."""
    os.environ.update(env)
    release_memory()
    spec = jobs[trial_config["job"]]
    cfg = job_from_dict(spec["config"])
    stable = job_dir(storage_root, suite, trial_config["job"], spec["hash"])
    device = "cuda" if cfg.resources.gpus_per_worker > 0 else "cpu"
    if not (spec.get("evaluate") or cfg.resources.workers == 1):
        _run_torch_trainer(cfg, spec, stable, storage_root, suite, trial_config["job"])
        return
    import ray.tune
    with scratch_folder() as scratch:
        try:
            if spec.get("evaluate"):  # a final checkpoint of this model: evaluated, nothing trained
                with storage.local_folder(spec["evaluate"], [ckpt.CHECKPOINT_FILE]) as source:
                    if source is None:
                        raise CheckpointMismatch(f"the final checkpoint at {spec['evaluate']} is gone; "
                                                 "`resolab run --no-reuse` trains the job again")
                    result = evaluate(source, cfg, device=device)
            else:
                result = run_job(cfg, TuneRuntime(stable, scratch, device=device), spec["hash"])
        except DETERMINISTIC_ERRORS as exc:
            ray.tune.report({"done": True, "failed": f"{type(exc).__name__}: {exc}"})
            return
        _final_report(cfg, result, ray.tune.report, stable, scratch, trial_config["job"])


def release_memory() -> None:
    """Free what an earlier job left in this trial process (Tune reuses it for the next job with the same
    resources): its objects, and the GPU memory torch keeps cached, which a job sharing the GPU may need.
    Nothing else carries over that could change a job's numbers: the loop seeds every RNG (an evaluation
    restores its checkpoint's), and a job sets its own torch thread count."""
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _run_torch_trainer(cfg, spec, stable: str, storage_root: str, suite: str, name: str) -> None:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = cfg.resources.gpus_per_worker > 0
    per_worker = {"CPU": cfg.resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = cfg.resources.gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"job": spec["config"], "hash": spec["hash"], "stable_dir": stable, "name": name},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.resources.workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"{name}-{spec['hash']}", storage_path=storage.join(storage.resolve(storage_root), suite, "train"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.resources.max_failures),
            # A restart resumes from the latest checkpoint only; older ones would pile up, one per epoch.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
            worker_runtime_env={"env_vars": forwarded_env()},
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    trainer.fit()
