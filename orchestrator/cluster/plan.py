"""What a suite does with each job, decided from one snapshot of the store before anything is written.

``read_snapshot`` reads the tracking store and the job folders once; ``plan_jobs`` is a pure function
of that snapshot: each job is skipped (FINISHED in this suite; a search sample stopped early counts, unless
``--resume-stopped``), copied (FINISHED in another suite:
``records.reuse``), evaluated (a final checkpoint of its model is on disk: its own, or one that another
job trained, ``orchestrator.cluster.evaluate_only``) or trained. ``SuiteTracking.carry_out`` then
records the decisions and the trials run them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from jobspec import training_hash
from orchestrator.cluster.evaluate_only import ModelStore, TrainedModel, final_checkpoint_of
from orchestrator.engine import checkpoint as ckpt
from records.reuse import finished_job_runs
from records.layout import job_dir
from records.names import CONFIG_HASH, EARLY_STOPPED, JOB_FILTER


@dataclass(frozen=True)
class Skip:
    """FINISHED in this suite already."""
    job: object


@dataclass(frozen=True)
class Copy:
    """FINISHED in another suite: that run (``source``) is copied into this suite."""
    job: object
    source: object


@dataclass(frozen=True)
class Evaluate:
    """A final checkpoint of the job's model is in ``checkpoint_dir``: evaluated, nothing trained.
    ``model``: the finished run of another job that trained it; None for the job's own checkpoint
    (trained to its end here, its run unfinished: the driver stopped during the matrix)."""
    job: object
    checkpoint_dir: str  # a path or an object-store URI
    model: TrainedModel | None = None


@dataclass(frozen=True)
class Train:
    job: object


Decision = Skip | Copy | Evaluate | Train


@dataclass
class StoreSnapshot:
    """What the planner knows of the store and the job folders, read once."""
    finished_here: set[str] = field(default_factory=set)  # config hashes with a FINISHED run in this suite
    # config hash -> a FINISHED run here that its search stopped early (``records.names.EARLY_STOPPED``)
    stopped_here: dict[str, str] = field(default_factory=dict)
    unfinished_here: dict[str, str] = field(default_factory=dict)  # config hash -> newest unfinished run id here
    finished_elsewhere: dict[str, object] = field(default_factory=dict)  # config hash -> newest FINISHED run elsewhere
    models: dict[str, TrainedModel] = field(default_factory=dict)  # training hash -> a finished model on disk
    own_checkpoints: dict[str, dict] = field(default_factory=dict)  # job name -> its own final checkpoint's fields


def plan_jobs(jobs, snapshot: StoreSnapshot, reuse: bool = True, resume_stopped: bool = False) -> list[Decision]:
    """One decision per job, in the jobs' order. Without ``reuse`` (``--no-reuse``) nothing is copied and
    no other job's model is evaluated; a job's own final checkpoint is still only evaluated. A search sample
    stopped early is done unless ``resume_stopped``; then it trains on in its run (``SuiteTracking.carry_out``),
    from its checkpoint, as does a job outside a search that has only such a run."""
    decisions = []
    for job in jobs:
        own = snapshot.own_checkpoints.get(job.name)
        model = snapshot.models.get(training_hash(job.config)) if reuse else None
        stopped_sample = job.hash in snapshot.stopped_here and job.search is not None
        if job.hash in snapshot.finished_here or (stopped_sample and not resume_stopped):
            decisions.append(Skip(job))
        elif reuse and job.hash in snapshot.finished_elsewhere:
            decisions.append(Copy(job, snapshot.finished_elsewhere[job.hash]))
        elif own is not None and not own.get(ckpt.EVALUATED_FROM_KEY):
            decisions.append(Evaluate(job, own["directory"]))
        elif model is not None:
            decisions.append(Evaluate(job, model.checkpoint_dir, model))
        elif own is not None:  # an evaluation copy of an earlier version, its source since deleted
            decisions.append(Evaluate(job, own["directory"]))
        else:
            decisions.append(Train(job))
    return decisions


def read_snapshot(client, experiment_id: str, jobs, suite_name: str, storage: str | None,
                  reuse: bool = True) -> tuple[StoreSnapshot, ModelStore | None]:
    """The snapshot ``plan_jobs`` decides from, and the model store it was read from (which explains a
    job without a model); ``experiment_id`` None: the suite has no experiment yet; ``storage`` None: no
    job folders are read (no evaluations)."""
    here = client.search_runs([experiment_id], JOB_FILTER, max_results=50000) if experiment_id else []
    snapshot = StoreSnapshot(finished_here={r.data.tags.get(CONFIG_HASH) for r in here
                                            if r.info.status == "FINISHED" and not r.data.tags.get(EARLY_STOPPED)})
    for run in sorted(here, key=lambda r: r.info.start_time or 0):
        if run.info.status == "FINISHED" and run.data.tags.get(EARLY_STOPPED):
            snapshot.stopped_here[run.data.tags.get(CONFIG_HASH)] = run.info.run_id
        if run.info.status != "FINISHED" or run.data.tags.get(EARLY_STOPPED):  # a stopped run resumes in place
            snapshot.unfinished_here[run.data.tags.get(CONFIG_HASH)] = run.info.run_id
    finished = finished_job_runs(client) if reuse or storage is not None else []  # newest first
    if reuse:
        for run in finished:
            if run.info.experiment_id != experiment_id:
                snapshot.finished_elsewhere.setdefault(run.data.tags.get(CONFIG_HASH), run)
    if storage is None:
        return snapshot, None
    models = ModelStore(client, storage, runs=finished)
    for job in jobs:
        if (job.hash in snapshot.finished_here or (reuse and job.hash in snapshot.finished_elsewhere)
                or (job.hash in snapshot.stopped_here and job.search is not None)):
            continue
        own = final_checkpoint_of(job, suite_name, storage)
        if own is not None:
            snapshot.own_checkpoints[job.name] = {**own, "directory": job_dir(storage, suite_name, job.name, job.hash)}
        model = models.find(job) if reuse else None
        if model is not None:
            snapshot.models[training_hash(job.config)] = model
    return snapshot, models
