"""Finished models are evaluated again, not trained again, when only their evaluation changes.

A job's training hash (``jobspec.hashing.training_hash``: what the config hash covers minus ``eval.*``)
names the model it trains. When a suite holds a job whose exact config hash has no FINISHED run in the
tracking store, but a FINISHED run with the same training hash left its final checkpoint on disk (in
its stable job directory ``<storage>/<suite>/jobs/<job>-<hash>/``, which is never deleted), the job is
evaluated from that checkpoint instead of being trained:

- its MLflow run is a new run of this suite, tagged ``resolab.evaluated_from`` (the run that trained
  the model), ``resolab.source_code_version`` (the code that trained it; ``resolab.code_version`` is
  the code that evaluated it) and ``resolab.source_checkpoint``; its description (``mlflow.note.content``,
  shown on the run page) says so, and the source's per-epoch history is copied into it (step = epoch);
- the job runs as a Ray Tune trial that calls ``orchestrator.engine.job.evaluate`` on the source's
  final checkpoint, where it lies (nothing is copied or relabelled); its result folder goes to MLflow
  through the same sink as any job's (matrix, predictions, ``resumed_at_epoch`` = epochs), and its
  ``resolab.checkpoint_dir`` names the source's checkpoint directory, where its model is.

``orchestrator.cluster.plan`` decides which jobs are evaluated; ``record_evaluation`` makes their runs.

Why a Ray trial rather than the driver: the evaluation gets the job's device and CPUs from Ray (a GPU
on a cluster, where the driver may have none), a suite's evaluations run side by side packed like
trained jobs, a crash is retried and shows in ``resolab status``, and there is one evaluation route
(``evaluate_job`` and the result folder) whatever trained the model. The trial has one worker whatever
``resources.workers`` says, since the matrix is computed on rank 0 only and other ranks would idle.
"""
from __future__ import annotations

from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from records.batch import log_batched
from analysis.report import parse_metric_name
from jobspec import training_hash, training_hash_of_params
from orchestrator.engine import checkpoint as ckpt
from records import names
from records.names import EPOCH_KEYS
from records.layout import job_dir
from records.reuse import finished_job_runs


@dataclass
class TrainedModel:
    run: object  # a FINISHED job run of this training hash (mlflow Run)
    checkpoint_dir: str  # holds its final checkpoint: a path or an object-store URI

    @property
    def trained_by(self) -> str:
        """The run that trained the model: a copy or an evaluation points back to it."""
        tags = self.run.data.tags
        return tags.get(names.EVALUATED_FROM) or tags.get(names.REUSED_FROM) or self.run.info.run_id

    @property
    def trained_code(self) -> str:
        tags = self.run.data.tags
        return tags.get(names.SOURCE_CODE_VERSION) or tags.get(names.CODE_VERSION, "unknown")


def checkpoint_dirs(run, storage) -> list[str]:
    """Where a run's checkpoint is: its tag (a path or an object-store URI), else where ``storage`` would
    hold it (older runs)."""
    tags = run.data.tags
    dirs = [tags[names.CHECKPOINT_DIR]] if tags.get(names.CHECKPOINT_DIR) else []
    if tags.get(names.SUITE) and tags.get(names.JOB):
        dirs.append(job_dir(storage, tags[names.SUITE], tags[names.JOB], tags.get(names.CONFIG_HASH)))
    return list(dict.fromkeys(dirs))


class ModelStore:
    """The FINISHED job runs of the whole tracking store by training hash, and where their final
    checkpoints are. Runs recorded before the training-hash tag existed get it from their params."""

    def __init__(self, client: MlflowClient, storage: str, runs: list | None = None):
        """``runs``: the store's FINISHED job runs, newest first, when the caller has read them already."""
        self.storage = storage
        self.finished_hashes: set[str] = set()
        self.runs: dict[str, list] = {}
        self._found: dict[str, TrainedModel | None] = {}
        for run in finished_job_runs(client) if runs is None else runs:  # newest first
            tags = run.data.tags
            self.finished_hashes.add(tags.get(names.CONFIG_HASH))
            key = tags.get(names.TRAINING_HASH) or training_hash_of_params(run.data.params)
            self.runs.setdefault(key, []).append(run)
        for runs in self.runs.values():  # the runs that trained a model first: their tags need no chasing
            runs.sort(key=lambda r: bool(r.data.tags.get(names.EVALUATED_FROM) or r.data.tags.get(names.REUSED_FROM)))

    def candidate_dirs(self, run) -> list[str]:
        return checkpoint_dirs(run, self.storage)

    def find(self, job) -> TrainedModel | None:
        """The newest finished run of ``job``'s training hash whose final checkpoint is on disk."""
        key = training_hash(job.config)
        if key not in self._found:
            self._found[key] = None
            for run in self.runs.get(key, []):
                found = next((d for d in self.candidate_dirs(run) if _holds_model(d, key)), None)
                if found is not None:
                    self._found[key] = TrainedModel(run, found)
                    break
        return self._found[key]

    def why_missing(self, job) -> str:
        runs = self.runs.get(training_hash(job.config), [])
        if not runs:
            return f"no FINISHED run trains its model (training hash {training_hash(job.config)}); `resolab run` trains it"
        run = runs[0]
        places = ", ".join(str(d) for d in self.candidate_dirs(run)) or "nowhere recorded"
        return (f"run {run.info.run_id} (suite {run.data.tags.get(names.SUITE)}) trained it, but no final "
                f"checkpoint is left at {places}; pass the --storage it ran with, or `resolab run` trains it again")


def _holds_model(directory: str, key: str) -> bool:
    meta = ckpt.final_checkpoint(directory)
    return meta is not None and training_hash(meta["config"]) == key


def final_checkpoint_of(job, suite_name: str, storage: str) -> dict | None:
    """The job's own stable directory holds a final checkpoint for this very config: one it trained to
    the end although its run did not finish (the driver died during the matrix), or an evaluation copy
    that an earlier version of resolab made. Its trial then only evaluates it."""
    meta = ckpt.final_checkpoint(job_dir(storage, suite_name, job.name, job.hash))
    return meta if meta is not None and meta["config_hash"] == job.hash else None


def record_evaluation(tracking, job, run_id: str, model: TrainedModel) -> str:
    """The run of ``job`` that evaluates ``model``: ``run_id``, or a new run where ``run_id`` was trained
    part-way (superseded, KILLED), tagged with the model's origin and holding its training history."""
    client = tracking.client
    run = client.get_run(run_id)
    if run.data.tags.get(names.EVALUATED_FROM):  # an earlier invocation's evaluation, interrupted
        return run_id
    if run.data.metrics:  # trained part-way (or half a history copied) by an earlier invocation: superseded
        client.set_tag(run_id, names.ERROR, f"superseded: evaluated from the model of run {model.trained_by}")
        client.set_terminated(run_id, status="KILLED")
        run_id = tracking._new_child(job)
    copy_history(client, model.run.info.run_id, run_id)
    source = model.run.data.tags
    tags = {names.EVALUATED_FROM: model.trained_by, names.SOURCE_CODE_VERSION: model.trained_code,
            names.SOURCE_CHECKPOINT: str(model.checkpoint_dir),
            names.DESCRIPTION: (f"Evaluation only, nothing trained: the model is the one run {model.trained_by} trained "
                              f"(suite {source.get(names.SUITE)}, job {source.get(names.JOB)}, code "
                              f"{model.trained_code}), read from {model.checkpoint_dir}. The per-epoch curves are "
                              "copied from it; the matrix was computed here, with this job's eval settings.")}
    for key, value in tags.items():  # the origin tag last: its presence means the history is complete
        client.set_tag(run_id, key, value)
    return run_id


def copy_history(client: MlflowClient, source_id: str, run_id: str) -> None:
    """Every per-epoch metric of ``source_id`` (step = epoch), not its final matrix."""
    source = client.get_run(source_id)
    keys = [k for k in source.data.metrics if k.startswith(EPOCH_KEYS) and parse_metric_name(k) is None]
    log_batched(client, run_id, metrics=[m for k in keys for m in client.get_metric_history(source_id, k)])
