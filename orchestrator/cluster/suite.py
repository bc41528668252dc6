"""``resolab run``: a suite as a Ray Tune grid, one trial per job, recorded in MLflow.

Order of work: validate every job (``load_suite``) → check each ImageFolder root once → check the
tracking store (nothing is recorded before these pass) → end the suite runs of drivers that are gone →
plan every job from one snapshot of the store (``orchestrator.cluster.plan``): skip those whose config
hash already has a FINISHED run, copy those finished in another suite (``records.reuse``), evaluate
those whose trained model is on disk (``orchestrator.cluster.evaluate_only``), train the rest → record
the plan → start (or join) Ray → one Tune trial per job to evaluate or train, packed by the resources
each job asks for → the driver records every job's result folder in MLflow. A job's run is made when
its trial starts, the suite's parent run when there is something to record. ``resolab evaluate``
(``evaluate_suite``) is the same minus training.
"""
from __future__ import annotations

import dataclasses
import math
import os
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from jobspec import training_hash
from orchestrator.cluster.plan import Train, plan_jobs, read_snapshot
from records import names
from records.layout import default_storage, job_dir
from records.storage import check_storage, is_remote, resolve as resolve_location
from records.store import check_store, resolve_tracking_uri

# Quiet Ray before it is imported anywhere: no auth-token warning, no duplicated worker prints, no extra
# Tune loggers or progress bars.
for _key, _value in {"RAY_AUTH_MODE": "disabled", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
                     "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_DEDUP_LOGS": "1",
                     "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
                     # Ctrl-C raises KeyboardInterrupt in the driver at once (Tune's own handler would end
                     # the trials and return as if they had failed): the runs end KILLED, the command 130.
                     "TUNE_DISABLE_SIGINT_HANDLER": "1",
                     "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ.setdefault(_key, _value)
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)
logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join a cluster
    tracking_uri: str | None = None
    storage: str | None = None  # checkpoints; must be shared storage on a multi-node cluster
    live_interval: float = 10.0
    reuse: bool = True  # copy finished runs of the same config hash from other suites instead of training
    resume_stopped: bool = False  # train the search samples stopped early to their end


@dataclass
class SuiteOutcome:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished in an earlier invocation of this suite
    reused: list[str] = field(default_factory=list)  # copied from another suite's finished run
    evaluated: list[str] = field(default_factory=list)  # finished by evaluating a model trained before, no training
    untrained: dict[str, str] = field(default_factory=dict)  # `resolab evaluate`: job -> why it has no model
    failed: dict[str, str] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)  # search samples its scheduler stopped early, this invocation
    max_running: int = 0  # most jobs seen running at once
    wall_s: float = 0.0  # from Ray start-up to the end of the last job
    trial_s: float = 0.0  # summed over jobs: trial start to final report, as the driver saw it
    train_s: float = 0.0  # summed over jobs: inside training epochs and matrix evaluation
    trial_processes: int = 0  # processes the trials ran in: one per slot when Tune reuses them

    def add(self, later: "SuiteOutcome") -> "SuiteOutcome":
        """This outcome followed by a later round's (a search's repeats) of the same invocation."""
        for name in ("finished", "skipped", "reused", "evaluated", "stopped"):
            getattr(self, name).extend(getattr(later, name))
        self.failed.update(later.failed)
        self.untrained.update(later.untrained)
        self.max_running = max(self.max_running, later.max_running)
        self.trial_processes = max(self.trial_processes, later.trial_processes)
        for name in ("wall_s", "trial_s", "train_s"):
            setattr(self, name, getattr(self, name) + getattr(later, name))
        return self

    def overhead_line(self) -> str:
        """Where the time went: the rest of each trial is start-up, data set-up, reporting, MLflow."""
        if not self.trial_s:
            return ""
        rest = self.trial_s - self.train_s
        return (f"wall {self.wall_s:.0f} s; jobs ran {self.trial_s:.0f} s in all, of which training + evaluation "
                f"{self.train_s:.0f} s ({100 * self.train_s / self.trial_s:.0f}%) and start-up, data set-up, "
                f"Ray reporting and MLflow {rest:.0f} s ({100 * rest / self.trial_s:.0f}%)")


def estimated_cost(job) -> float:
    """Relative training cost: epochs x pixels per sample over all training resolutions."""
    cfg = job.config
    return cfg.train.epochs * sum(r * r for r in cfg.data.resolutions)


def trial_resources(cfg):
    """A one-worker job is its trial; a multi-worker job's trial only drives a TorchTrainer (which
    reserves its own workers), so it asks for a sliver of CPU ({"CPU": 0} is refused by Tune)."""
    from ray import tune
    r = cfg.resources
    if r.workers == 1:
        bundle = {"CPU": r.cpus_per_worker}
        if r.gpus_per_worker:
            bundle["GPU"] = r.gpus_per_worker
        return tune.PlacementGroupFactory([bundle])
    return tune.PlacementGroupFactory([{"CPU": 0.01}])


def max_concurrency(jobs, cluster: dict) -> int:
    """How many jobs fit side by side on the cluster, by the smallest job's CPU and GPU demand."""
    def need(job, key):
        r = job.config.resources
        per = r.cpus_per_worker if key == "CPU" else r.gpus_per_worker
        return per * r.workers
    fits = []
    for key in ("CPU", "GPU"):
        demands = [need(j, key) for j in jobs if need(j, key) > 0]
        if demands:
            fits.append(math.floor(cluster.get(key, 0) / min(demands) + 1e-9))
    return max(1, min(fits) if fits else len(jobs))


def init_ray(address: str | None) -> None:
    """Start or join Ray; ``address`` was checked already (``prepare_storage``, before anything is recorded)."""
    import ray

    from orchestrator.cluster.trial_env import job_runtime_env
    if ray.is_initialized():
        return
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]  # set by Ray in a Ray Job's entrypoint: the job's cluster
    if address is None:
        # The dashboard (127.0.0.1 only) serves the state API that Train uses to clean up the
        # placement groups of a TorchTrainer launched from a Tune trial; without it they leak.
        # "local": a new Ray, never the cluster a past `ray start` named in /tmp/ray/ray_current_cluster,
        # which plain ray.init() joins, or waits for when it is gone.
        ray.init(address="local", log_to_driver=False, logging_level="ERROR", dashboard_host="127.0.0.1",
                 runtime_env=job_runtime_env())
    else:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR", runtime_env=job_runtime_env())


def prepare_storage(options: RunOptions) -> str:
    """The suite's storage, checked: written to here, and seen by every node of a cluster it joins (and
    ``--address``, which names that cluster)."""
    from orchestrator.cluster.ray_address import check_ray_address
    from orchestrator.cluster.storage_check import check_nodes_see, durable_defaults
    from orchestrator.cluster.trial_env import in_ray_job

    check_ray_address(options.address)  # before anything is recorded
    durable_defaults(options.storage, options.tracking_uri)
    storage = resolve_location(options.storage or default_storage())
    check_storage(storage)
    if not is_remote(storage) and (options.address is not None or in_ray_job()):
        init_ray(options.address)
        check_nodes_see(storage)
    return storage


def run_suite(suite, options: RunOptions, stream=None) -> SuiteOutcome:
    """``stream``: where the live progress line goes (default stdout); the suite's other lines are logged.
    A suite whose search has ``repeat: N`` runs a second round once its samples are done: each search's
    best sample with N - 1 more seeds (``orchestrator.cluster.search_repeats``)."""
    from orchestrator.data.loaders import check_suite_data
    from orchestrator.cluster.mlflow_sink import SuiteTracking

    # Before the store is touched or Ray starts: a suite that cannot run records nothing.
    check_suite_data(suite.jobs)
    uri = resolve_tracking_uri(options.tracking_uri)
    check_store(uri)
    storage = prepare_storage(options)
    tracking = SuiteTracking(uri, suite, command=" ".join(shlex.quote(a) for a in sys.argv))
    for run_id, why in tracking.ended_parents.items():
        logger.info(f"suite run {run_id} ended as KILLED: {why}")
    with tracking.killed_on_interrupt():
        repeats = suite.search is not None and suite.search.repeat > 1
        outcome = _run_round(suite, tracking, storage, options, stream, last=not repeats)
        if repeats:
            from orchestrator.cluster.search_repeats import repeats_of_best
            jobs = repeats_of_best(suite, tracking.job_runs(), failed=outcome.failed)
            outcome.add(_run_round(dataclasses.replace(suite, jobs=jobs), tracking, storage, options, stream,
                                   last=False))
            tracking.finish_suite(failed=bool(outcome.failed))  # both rounds' outcome ends the invocation's run
    return outcome


def _run_round(suite, tracking, storage: str, options: RunOptions, stream, last: bool) -> SuiteOutcome:
    """Plan ``suite.jobs`` from one snapshot of the store, record the plan and run the trials; ``last``:
    the invocation's parent run ends with this round."""
    # --no-reuse trains everything anew: it neither copies finished runs nor evaluates their models.
    snapshot, _ = read_snapshot(tracking.client, tracking.experiment_id, suite.jobs, suite.name, storage,
                                reuse=options.reuse)
    decisions = plan_jobs(suite.jobs, snapshot, reuse=options.reuse, resume_stopped=options.resume_stopped)
    prepared = tracking.carry_out(decisions, snapshot)
    done, copied, run_ids = prepared.done, prepared.copied, prepared.run_ids
    from_others = [name for name, e in prepared.evaluations.items() if e.model is not None]
    outcome = SuiteOutcome(skipped=[j.name for j in done], reused=[j.name for j in copied])
    resumed = {j.name for j in suite.jobs if j.hash in snapshot.stopped_here and j.name in run_ids}
    stopped = f", {len(resumed)} stopped early by the search to train to the end" if resumed else ""
    logger.info(f"suite {suite.name}: {len(suite.jobs)} jobs, {len(done)} already finished, {len(copied)} copied "
                f"from other suites' finished runs, {len(from_others)} to evaluate from models trained by other "
                f"jobs, {len(run_ids) - len(from_others)} to run{stopped}; tracking {tracking.uri}")
    outcome = run_trials(suite, tracking, run_ids, checkpoints_of(prepared.evaluations), storage, options,
                         outcome, stream, finish=last, run_to_end=resumed)
    outcome.evaluated = [name for name in from_others if name in outcome.finished]
    return outcome


def evaluate_suite(suite, options: RunOptions, stream=None) -> SuiteOutcome:
    """``resolab evaluate``: what ``resolab run`` does minus training. Jobs finished here are skipped,
    those finished in another suite copied, those with a trained model evaluated; the rest are listed
    in ``outcome.untrained`` and get no MLflow run."""
    from orchestrator.data.loaders import check_suite_data
    from orchestrator.cluster.mlflow_sink import SuiteTracking

    check_suite_data(suite.jobs)  # as `resolab run` does: a bad data.root fails here, before anything is recorded
    uri = resolve_tracking_uri(options.tracking_uri)
    check_store(uri)
    storage = prepare_storage(options)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite.name)
    snapshot, models = read_snapshot(client, experiment.experiment_id if experiment else None, suite.jobs,
                                     suite.name, storage)
    decisions = plan_jobs(suite.jobs, snapshot)
    untrained = {d.job.name: models.why_missing(d.job) for d in decisions if isinstance(d, Train)}
    usable = [d for d in decisions if not isinstance(d, Train)]
    if not usable:
        logger.info(f"suite {suite.name}: none of its {len(suite.jobs)} jobs has a trained model; nothing evaluated")
        return SuiteOutcome(untrained=untrained)
    tracking = SuiteTracking(uri, suite, command=" ".join(shlex.quote(a) for a in sys.argv))
    prepared = tracking.carry_out(usable, snapshot)
    outcome = SuiteOutcome(skipped=[j.name for j in prepared.done], reused=[j.name for j in prepared.copied],
                           untrained=untrained)
    logger.info(f"suite {suite.name}: {len(suite.jobs)} jobs, {len(prepared.done)} already finished, "
                f"{len(prepared.copied)} copied from other suites' finished runs, {len(prepared.run_ids)} to evaluate, "
                f"{len(untrained)} without a trained model; tracking {uri}")
    outcome = run_trials(suite, tracking, prepared.run_ids, checkpoints_of(prepared.evaluations), storage, options,
                         outcome, stream)
    outcome.evaluated = list(outcome.finished)
    return outcome


def checkpoints_of(evaluations: dict) -> dict[str, str]:
    """Job name -> the folder (path or URI) of the final checkpoint its evaluation-only trial evaluates."""
    return {name: str(decision.checkpoint_dir) for name, decision in evaluations.items()}


def evaluation_job(job):
    """The job as its evaluation-only trial runs it: one worker, since only rank 0 computes the matrix."""
    config = job.config.model_copy(deep=True)
    config.resources.workers = 1
    return dataclasses.replace(job, config=config)


def run_trials(suite, tracking, run_ids, evaluate_only: dict[str, str], storage: str,
               options: RunOptions, outcome: SuiteOutcome, stream, finish: bool = True,
               run_to_end: set[str] = frozenset()) -> SuiteOutcome:
    """One Tune trial per job of ``run_ids`` (``JobRuns``: job name -> MLflow run), recorded by the driver;
    ``evaluate_only``: job name -> the final checkpoint it only evaluates, run on one worker and first
    (minutes each); ``finish``: end the invocation's parent run afterwards; ``run_to_end``: search samples
    the suite's scheduler leaves alone (``--resume-stopped``).
    Ctrl-C ends this invocation's unfinished runs as KILLED (``resolab evaluate`` comes here too)."""
    with tracking.killed_on_interrupt():
        return _run_trials(suite, tracking, run_ids, evaluate_only, storage, options, outcome, stream, finish,
                           run_to_end)


def _run_trials(suite, tracking, run_ids, evaluate_only: dict[str, str], storage: str,
                options: RunOptions, outcome: SuiteOutcome, stream, finish: bool, run_to_end: set[str]) -> SuiteOutcome:
    from ray import tune

    from orchestrator.cluster.live import LiveView
    from orchestrator.cluster.mlflow_sink import MlflowSink
    from orchestrator.cluster.ray_job import job_trial
    from orchestrator.cluster.trial_env import forwarded_env

    def cost(job) -> float:
        return 0.0 if job.name in evaluate_only else estimated_cost(job)

    # Evaluations first, their results are there in minutes; then the longest jobs first: the short ones
    # then fill the gaps at the end instead of leaving workers idle.
    todo = sorted((evaluation_job(j) if j.name in evaluate_only else j for j in suite.jobs if j.name in run_ids),
                  key=lambda j: (j.name in evaluate_only, estimated_cost(j)), reverse=True)
    if not todo:
        if finish:
            tracking.finish_suite(failed=False)
        return outcome
    for job in todo:  # what a later evaluation looks for (also on runs begun before these tags existed)
        folder = evaluate_only.get(job.name) or job_dir(storage, suite.name, job.name, job.hash)
        run_ids.set_tags(job.name, {names.CHECKPOINT_DIR: folder, names.TRAINING_HASH: training_hash(job.config)})

    parent_id = tracking.parent_id  # made now at the latest: the invocation's run covers Ray's start
    started = time.monotonic()
    init_ray(options.address)
    import ray
    jobs = {j.name: {"config": j.config.to_dict(), "hash": j.hash,
                     "evaluate": evaluate_only.get(j.name)} for j in todo}
    by_name = {j.name: j for j in todo}
    scheduler = search_scheduler(suite, todo, run_to_end)
    sink = MlflowSink(tracking.client, run_ids, parent_id, stopped=scheduler.stopped if scheduler else None)
    slots = max_concurrency(todo, ray.cluster_resources())
    live = LiveView(suite.name, {j.name: j.config.train.epochs for j in todo}, {j.name: cost(j) for j in todo},
                    already_done=len(outcome.skipped) + len(outcome.reused), slots=slots,
                    interval=options.live_interval, stream=stream)
    trainable = tune.with_resources(
        tune.with_parameters(job_trial, jobs=jobs, storage_root=storage, suite=suite.name, env=forwarded_env()),
        resources=lambda config: trial_resources(by_name[config["job"]].config))
    tuner = tune.Tuner(
        trainable,
        param_space={"job": tune.grid_search([j.name for j in todo])},
        # A trial process that ends its job runs the next job that asks for the same resources: starting
        # a process and importing torch cost ~6 s of a slot per job (bench/suite_scale.py). Each job still
        # starts clean (ray_job.job_trial), so its numbers do not depend on the jobs run before it. Not
        # with multi-worker jobs: with reuse, three 2-worker jobs run one after another from one trial process
        # did not finish in 400 s (Ray 2.60; 80 s without).
        tune_config=tune.TuneConfig(max_concurrent_trials=slots, scheduler=scheduler,
                                    reuse_actors=all(j.config.resources.workers == 1 for j in todo)),
        run_config=tune.RunConfig(
            name=f"{suite.name}-{parent_id[:8]}", storage_path=storage, verbose=0,
            callbacks=[sink, live],
            # Ray's copy of each report's checkpoint serves retries within this invocation, which need
            # only the latest; the job's own final checkpoint stays in its stable directory.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=max(j.config.resources.max_failures for j in todo))),
    )
    tuner.fit()
    outcome.wall_s = time.monotonic() - started
    outcome.max_running, outcome.train_s = live.max_running, sink.busy_seconds
    outcome.trial_s = sum(live.job_seconds)
    outcome.trial_processes = len(live.processes)
    outcome.failed = dict(sink.failures)
    outcome.finished = [n for n in by_name if n in sink.finished]
    outcome.stopped = [n for n in by_name if n in sink.stopped_early]
    for name in by_name:
        if name not in sink.finished and name not in sink.stopped_early and name not in outcome.failed:
            outcome.failed[name] = "ended without a result (see the Ray logs under /tmp/ray/session_latest/logs)"
    if finish:
        tracking.finish_suite(failed=bool(outcome.failed))
    return outcome


def search_scheduler(suite, todo, run_to_end: set[str]):
    """The suite's search scheduler for the jobs of ``todo`` (None when none of them is a search sample)."""
    if suite.search is None or not any(j.search is not None and j.name not in run_to_end for j in todo):
        return None
    from orchestrator.cluster.search_scheduler import SearchScheduler
    return SearchScheduler(suite.search, todo, exclude=run_to_end)
