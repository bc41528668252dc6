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
- the source's checkpoint is copied into this job's stable directory, relabelled with this job's config
  and hash (``checkpoint.evaluation_copy``), and the job runs as an ordinary Ray Tune trial: the loop
  restores that final checkpoint, runs no epoch, and ``run_job`` only evaluates; the final report goes
  to MLflow through the same sink as any job's (matrix, predictions, ``resumed_at_epoch`` = epochs).

Why a Ray trial rather than the driver: the evaluation gets the job's device and CPUs from Ray (a GPU
on a cluster, where the driver may have none), a suite's evaluations run side by side packed like
trained jobs, a crash is retried and shows in ``resolab status``, and there is one evaluation route
(``evaluate_job`` and the final report) whatever trained the model. The trial has one worker whatever
``resources.workers`` says, since the matrix is computed on rank 0 only and other ranks would idle.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from records.batch import log_batched
from analysis.report import parse_metric_name
from jobspec import training_hash, training_hash_of_params
from orchestrator.engine import checkpoint as ckpt
from orchestrator.cluster.ray_job import job_dir
from records.reuse import REUSED_FROM_TAG, finished_job_runs
from records.tracking import CHECKPOINT_DIR_TAG, TRAINING_HASH_TAG

EVALUATED_FROM_TAG = "resolab.evaluated_from"
SOURCE_CODE_TAG = "resolab.source_code_version"
SOURCE_CHECKPOINT_TAG = "resolab.source_checkpoint"
DESCRIPTION_TAG = "mlflow.note.content"


@dataclass
class TrainedModel:
    run: object  # a FINISHED job run of this training hash (mlflow Run)
    checkpoint_dir: Path  # holds its final checkpoint

    @property
    def trained_by(self) -> str:
        """The run that trained the model: a copy or an evaluation points back to it."""
        tags = self.run.data.tags
        return tags.get(EVALUATED_FROM_TAG) or tags.get(REUSED_FROM_TAG) or self.run.info.run_id

    @property
    def trained_code(self) -> str:
        tags = self.run.data.tags
        return tags.get(SOURCE_CODE_TAG) or tags.get("resolab.code_version", "unknown")


def checkpoint_dirs(run, storage) -> list[Path]:
    """Where a run's checkpoint is: its tag, else where ``storage`` would hold it (older runs)."""
    tags = run.data.tags
    dirs = [Path(tags[CHECKPOINT_DIR_TAG])] if tags.get(CHECKPOINT_DIR_TAG) else []
    if tags.get("resolab.suite") and tags.get("resolab.job"):
        dirs.append(job_dir(storage, tags["resolab.suite"], tags["resolab.job"], tags.get("resolab.config_hash")))
    return list(dict.fromkeys(dirs))


class ModelStore:
    """The FINISHED job runs of the whole tracking store by training hash, and where their final
    checkpoints are. Runs recorded before the training-hash tag existed get it from their params."""

    def __init__(self, client: MlflowClient, storage: str):
        self.storage = storage
        self.finished_hashes: set[str] = set()
        self.runs: dict[str, list] = {}
        self._found: dict[str, TrainedModel | None] = {}
        for run in finished_job_runs(client):  # newest first
            tags = run.data.tags
            self.finished_hashes.add(tags.get("resolab.config_hash"))
            key = tags.get(TRAINING_HASH_TAG) or training_hash_of_params(run.data.params)
            self.runs.setdefault(key, []).append(run)
        for runs in self.runs.values():  # the runs that trained a model first: their tags need no chasing
            runs.sort(key=lambda r: bool(r.data.tags.get(EVALUATED_FROM_TAG) or r.data.tags.get(REUSED_FROM_TAG)))

    def candidate_dirs(self, run) -> list[Path]:
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
        return (f"run {run.info.run_id} (suite {run.data.tags.get('resolab.suite')}) trained it, but no final "
                f"checkpoint is left at {places}; pass the --storage it ran with, or `resolab run` trains it again")


def _holds_model(directory: Path, key: str) -> bool:
    meta = ckpt.final_checkpoint(directory)
    return meta is not None and training_hash(meta["config"]) == key


def final_checkpoint_of(job, suite_name: str, storage: str) -> dict | None:
    """The job's own stable directory holds a final checkpoint for this very config: one it trained to
    the end although its run did not finish (the driver died during the matrix), or an evaluation copy
    from an earlier invocation. Its trial then only evaluates."""
    meta = ckpt.final_checkpoint(job_dir(storage, suite_name, job.name, job.hash))
    return meta if meta is not None and meta["config_hash"] == job.hash else None


def plan_evaluations(tracking, jobs, run_ids: dict[str, str], models: ModelStore) -> dict[str, TrainedModel]:
    """Turn the jobs of ``run_ids`` that have a trained model into evaluations (see the module docstring);
    ``run_ids`` is updated where a part-trained run is superseded. Returns job name -> model evaluated."""
    planned = {}
    for job in jobs:
        if job.name not in run_ids:
            continue
        own = final_checkpoint_of(job, tracking.suite.name, models.storage)
        if own is not None and not own.get(ckpt.EVALUATED_FROM_KEY):
            continue  # trained to its end here: its own trial only evaluates, into its own run
        model = models.find(job)
        if model is None:
            continue
        run_ids[job.name] = _evaluation_run(tracking, job, run_ids[job.name], model)
        if own is None:  # else an earlier invocation copied it already
            stable = job_dir(models.storage, tracking.suite.name, job.name, job.hash)
            ckpt.evaluation_copy(model.checkpoint_dir, stable, job.config.to_dict(), job.hash)
        planned[job.name] = model
    return planned


def _evaluation_run(tracking, job, run_id: str, model: TrainedModel) -> str:
    """The job's run, tagged with the model's origin and holding its training history."""
    client = tracking.client
    run = client.get_run(run_id)
    if run.data.tags.get(EVALUATED_FROM_TAG):  # an earlier invocation's evaluation, interrupted
        return run_id
    if run.data.metrics:  # trained part-way (or half a history copied) by an earlier invocation: superseded
        client.set_tag(run_id, "resolab.error", f"superseded: evaluated from the model of run {model.trained_by}")
        client.set_terminated(run_id, status="KILLED")
        run_id = tracking._new_child(job)
    copy_history(client, model.run.info.run_id, run_id)
    source = model.run.data.tags
    tags = {EVALUATED_FROM_TAG: model.trained_by, SOURCE_CODE_TAG: model.trained_code,
            SOURCE_CHECKPOINT_TAG: str(model.checkpoint_dir),
            DESCRIPTION_TAG: (f"Evaluation only, nothing trained: the model is the one run {model.trained_by} trained "
                              f"(suite {source.get('resolab.suite')}, job {source.get('resolab.job')}, code "
                              f"{model.trained_code}), read from {model.checkpoint_dir}. The per-epoch curves are "
                              "copied from it; the matrix was computed here, with this job's eval settings.")}
    for key, value in tags.items():  # the origin tag last: its presence means the history is complete
        client.set_tag(run_id, key, value)
    return run_id


def copy_history(client: MlflowClient, source_id: str, run_id: str) -> None:
    """Every per-epoch metric of ``source_id`` (step = epoch), not its final matrix."""
    from orchestrator.cluster.mlflow_sink import EPOCH_KEYS  # imports Ray; only a suite driver needs it

    source = client.get_run(source_id)
    keys = [k for k in source.data.metrics if k.startswith(EPOCH_KEYS) and parse_metric_name(k) is None]
    log_batched(client, run_id, metrics=[m for k in keys for m in client.get_metric_history(source_id, k)])


@dataclass
class EvaluationPlan:
    usable: list = field(default_factory=list)  # done, copyable, or with a trained model on disk
    untrained: dict[str, str] = field(default_factory=dict)  # job name -> why it has no trained model


def split_by_model(jobs, suite_name: str, models: ModelStore) -> EvaluationPlan:
    plan = EvaluationPlan()
    for job in jobs:
        if (job.hash in models.finished_hashes or final_checkpoint_of(job, suite_name, models.storage)
                or models.find(job) is not None):
            plan.usable.append(job)
        else:
            plan.untrained[job.name] = models.why_missing(job)
    return plan


def evaluate_suite(suite, options, stream=None):
    """``resolab evaluate``: what ``resolab run`` does minus training. Jobs finished here are skipped,
    those finished in another suite copied, those with a trained model evaluated; the rest are listed
    in ``outcome.untrained`` and get no MLflow run."""
    import shlex

    from jobspec import resolve_tracking_uri
    from orchestrator.data.loaders import check_suite_data
    from orchestrator.cluster.mlflow_sink import SuiteTracking, check_tracking
    from orchestrator.cluster.suite import SuiteOutcome, default_storage, run_trials

    stream = stream or sys.stdout
    check_suite_data(suite.jobs)  # as `resolab run` does: a bad data.root fails here, before anything is recorded
    uri = resolve_tracking_uri(options.tracking_uri)
    check_tracking(uri)
    storage = options.storage or default_storage()
    models = ModelStore(MlflowClient(uri), storage)
    plan = split_by_model(suite.jobs, suite.name, models)
    if not plan.usable:
        print(f"suite {suite.name}: none of its {len(suite.jobs)} jobs has a trained model; nothing evaluated",
              file=stream)
        return SuiteOutcome(untrained=plan.untrained)
    tracking = SuiteTracking(uri, suite, command=" ".join(shlex.quote(a) for a in sys.argv))
    done, copied, run_ids = tracking.prepare(plan.usable)
    plan_evaluations(tracking, plan.usable, run_ids, models)
    outcome = SuiteOutcome(skipped=[j.name for j in done], reused=[j.name for j in copied], untrained=plan.untrained)
    print(f"suite {suite.name}: {len(suite.jobs)} jobs, {len(done)} already finished, {len(copied)} copied from other "
          f"suites' finished runs, {len(run_ids)} to evaluate, {len(plan.untrained)} without a trained model; "
          f"tracking {uri}", file=stream)
    # Every trial here only evaluates: its own final checkpoint, or one copied from another job's.
    outcome = run_trials(suite, tracking, run_ids, set(run_ids), storage, options, outcome, stream)
    outcome.evaluated = list(outcome.finished)
    return outcome
