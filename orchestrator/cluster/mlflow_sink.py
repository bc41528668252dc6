"""The suite driver's MLflow side: the store check, the suite's parent run, one child run per job,
and a Tune callback that records what trials report. All writes happen in the driver process.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import logging

import mlflow
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from records.batch import log_batched
from analysis.report import log_matrix
from jobspec import flatten, param_value
from orchestrator.engine.results import JobOutcome, fetched_result
from records.names import EPOCH_KEYS
from orchestrator.cluster.evaluate_only import record_evaluation
from orchestrator.cluster.plan import Copy, Decision, Evaluate, Skip, StoreSnapshot, plan_jobs, read_snapshot
from records.reuse import copy_run
from records import names
from records.runs import (DRIVER_GONE_AFTER_S, HEARTBEAT_EVERY_S, code_version, job_tags, suite_experiment,
                          suite_run_tags)

logging.getLogger("mlflow").setLevel(logging.WARNING)  # after import: mlflow sets its own level on import

# The error tag of the runs a Ctrl-C ended (KILLED).
INTERRUPTED = "interrupted (Ctrl-C / SIGINT); run the same command again to resume"


class SuiteTracking:
    """Experiment, parent run and child runs of one ``resolab run`` invocation.

    The parent run is made when the invocation first records something, so a rerun with every job
    already finished leaves no empty parent run behind. Parent runs of this suite whose driver is gone
    (killed: ``kill -9``, a lost machine) are ended as KILLED, since nothing else would ever end them."""

    def __init__(self, uri: str, suite, command: str):
        self.client = MlflowClient(uri)
        self.uri, self.suite, self.command = uri, suite, command
        self.experiment_id = suite_experiment(self.client, suite.name, uri)
        self._parent_id: str | None = None
        self.ended_parents = self.end_abandoned_parents()

    @property
    def parent_id(self) -> str:
        if self._parent_id is None:
            self._parent_id = self.client.create_run(
                self.experiment_id, run_name=f"{self.suite.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                tags=suite_run_tags(self.suite.name, self.command, this_driver())).info.run_id
        return self._parent_id

    def end_abandoned_parents(self, now: float | None = None) -> dict[str, str]:
        """End as KILLED every RUNNING parent run of this suite whose driver is gone; their unfinished
        job runs are left as they are: this invocation resumes them, and `resolab status` reads them as
        interrupted. Returns run id -> why its driver is gone."""
        now = time.time() if now is None else now
        ended = {}
        for run in self.client.search_runs(
                [self.experiment_id],
                f"{names.tag_equals(names.KIND, names.SUITE_RUN)} and attributes.status = 'RUNNING'",
                max_results=50000):
            why = driver_gone(run.data.tags, now)
            if why:
                last_sign = float(run.data.tags.get(names.DRIVER_HEARTBEAT, 0.0)) or now
                self.client.set_tag(run.info.run_id, names.ERROR, f"ended by a later `resolab run`: {why}")
                self.client.set_terminated(run.info.run_id, status="KILLED", end_time=int(last_sign * 1000))
                ended[run.info.run_id] = why
        return ended

    def job_runs(self) -> list:
        return self.client.search_runs([self.experiment_id], names.JOB_FILTER, max_results=50000)

    def prepare(self, jobs, reuse: bool = True, storage: str | None = None) -> tuple[list, list, JobRuns]:
        """Plan ``jobs`` from a snapshot of the store and record the plan (``carry_out``): (already finished
        here, copied from another suite's finished run, the runs to record into). ``storage`` None: no job
        folder is read, so nothing is planned as an evaluation."""
        snapshot, _ = read_snapshot(self.client, self.experiment_id, jobs, self.suite.name, storage, reuse)
        prepared = self.carry_out(plan_jobs(jobs, snapshot, reuse), snapshot)
        return prepared.done, prepared.copied, prepared.run_ids

    def carry_out(self, decisions: list[Decision], snapshot: StoreSnapshot) -> PreparedSuite:
        """Record the decisions of ``plan_jobs``. A copy supersedes an unfinished run of its job; an
        unfinished run of the same config hash from an earlier invocation is reused, so a rerun creates no
        duplicates; a job without one gets its run when it starts (``JobRuns``); the run of a job that
        evaluates another job's model says so and holds that model's training history."""
        unfinished = snapshot.unfinished_here
        prepared = PreparedSuite()
        run_ids, waiting = {}, {}
        for decision in decisions:
            job = decision.job
            if isinstance(decision, Skip):
                prepared.done.append(job)
            elif isinstance(decision, Copy):
                if job.hash in unfinished:  # superseded by the copy
                    self.client.set_terminated(unfinished[job.hash], status="KILLED")
                copy_run(self.client, decision.source, self.experiment_id, self._child_tags(job))
                prepared.copied.append(job)
            elif job.hash in unfinished:
                run_ids[job.name] = unfinished[job.hash]
                if job.hash in snapshot.stopped_here:  # --resume-stopped: the sample trains on in its run
                    self.client.delete_tag(run_ids[job.name], names.EARLY_STOPPED)
                self.client.set_tag(run_ids[job.name], names.PARENT_RUN, self.parent_id)
                self.client.update_run(run_ids[job.name], status="SCHEDULED")
            else:
                waiting[job.name] = job
        prepared.run_ids = JobRuns(self, run_ids, waiting)
        for decision in decisions:
            if isinstance(decision, Evaluate):
                if decision.model is not None:
                    prepared.run_ids[decision.job.name] = record_evaluation(
                        self, decision.job, prepared.run_ids[decision.job.name], decision.model)
                prepared.evaluations[decision.job.name] = decision
        return prepared

    def _child_tags(self, job) -> dict[str, str]:
        return {**job_tags(self.suite.name, job, code_version()), names.PARENT_RUN: self.parent_id}

    def _new_child(self, job, tags: dict[str, str] | None = None, scheduled: bool = True) -> str:
        """``scheduled=False``: a run whose job starts now, left RUNNING as MLflow makes it."""
        run_id = self.client.create_run(self.experiment_id, run_name=job.name,
                                        tags={**self._child_tags(job), **(tags or {})}).info.run_id
        if scheduled:
            self.client.update_run(run_id, status="SCHEDULED")
        log_batched(self.client, run_id,
                    params=[mlflow.entities.Param(k, param_value(v)) for k, v in flatten(job.config).items()])
        return run_id

    def finish_suite(self, failed: bool) -> None:
        if self._parent_id is not None:
            self.client.set_terminated(self._parent_id, status="FAILED" if failed else "FINISHED")

    @contextlib.contextmanager
    def killed_on_interrupt(self):
        """Ctrl-C (SIGINT) is an interrupt, not a failure: the parent run and every job run of this
        invocation still running or queued end as KILLED, tagged with what to do (`resolab status`: interrupted;
        the same command resumes them), and the KeyboardInterrupt goes on (the command exits 130).
        A second Ctrl-C is held off for the few writes that takes."""
        try:
            yield
        except KeyboardInterrupt:
            held = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if held else None
            try:
                self.end_interrupted()
            finally:
                if held:
                    signal.signal(signal.SIGINT, previous)
            raise

    def end_interrupted(self) -> None:
        if self._parent_id is None:  # nothing recorded yet
            return
        children = self.client.search_runs([self.experiment_id], names.tag_equals(names.PARENT_RUN, self._parent_id),
                                           max_results=50000)
        for run in [*children, self.client.get_run(self._parent_id)]:
            if run.info.status in ("RUNNING", "SCHEDULED"):
                self.client.set_tag(run.info.run_id, names.ERROR, INTERRUPTED)
                self.client.set_terminated(run.info.run_id, status="KILLED")


@dataclass
class PreparedSuite:
    """What ``SuiteTracking.carry_out`` recorded: the jobs skipped and copied, the runs of the jobs to run,
    and the jobs among them that only evaluate (job name -> its ``Evaluate`` decision)."""
    done: list = field(default_factory=list)
    copied: list = field(default_factory=list)
    run_ids: "JobRuns | None" = None
    evaluations: dict[str, Evaluate] = field(default_factory=dict)


class JobRuns(MutableMapping):
    """Job name -> MLflow run id, for the jobs that one invocation runs. A job without a run yet gets
    one when it is first asked for, normally by its trial's start (``MlflowSink.on_trial_start``):
    MLflow cannot move a run's start time, and a run made when the suite starts would show the job's
    time in the queue as part of its Duration. Until then the job has no run (`resolab status`: pending)."""

    def __init__(self, tracking: SuiteTracking, run_ids: dict[str, str], waiting: dict):
        self.tracking, self.ids, self.waiting = tracking, dict(run_ids), dict(waiting)
        self.later_tags: dict[str, dict[str, str]] = {}  # job name -> tags for the run made when it starts

    def __getitem__(self, name: str) -> str:
        if name not in self.ids:
            job = self.waiting.pop(name)  # KeyError: not a job of this invocation
            self.ids[name] = self.tracking._new_child(job, self.later_tags.pop(name, None))
        return self.ids[name]

    def __setitem__(self, name: str, run_id: str) -> None:
        self.waiting.pop(name, None)
        self.ids[name] = run_id

    def __delitem__(self, name: str) -> None:
        if self.ids.pop(name, None) is None and self.waiting.pop(name, None) is None:
            raise KeyError(name)

    def __contains__(self, name) -> bool:
        return name in self.ids or name in self.waiting

    def __iter__(self):
        return iter([*self.ids, *self.waiting])

    def __len__(self) -> int:
        return len(self.ids) + len(self.waiting)

    def start(self, name: str) -> None:
        """The job's trial starts: its run made now, or its existing run set RUNNING."""
        if name in self.ids:
            self.tracking.client.update_run(self.ids[name], status="RUNNING")
        else:  # made RUNNING: two MLflow writes fewer per job than made SCHEDULED and then set RUNNING
            job = self.waiting.pop(name)
            self.ids[name] = self.tracking._new_child(job, self.later_tags.pop(name, None), scheduled=False)

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        """Tag the job's run now, or its run-to-be when it is made."""
        if name in self.ids:
            for key, value in tags.items():
                self.tracking.client.set_tag(self.ids[name], key, value)
        else:
            self.later_tags[name] = {**self.later_tags.get(name, {}), **tags}


def this_driver() -> str:
    """Host, pid namespace, pid and process start, stamped on the parent run: a later invocation on the
    same machine can tell at once that this driver is gone, instead of waiting DRIVER_GONE_AFTER_S for
    its heartbeat to go stale."""
    return f"{socket.gethostname()} {_pid_namespace()} {os.getpid()} {_process_start(os.getpid())}"


def _pid_namespace() -> str:
    """Containers sharing the host's name can still have their own pids."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start in clock ticks since boot, so that a reused pid is not taken for the driver;
    '' where there is no such process (or no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def driver_gone(tags: dict[str, str], now: float) -> str | None:
    """Why the driver of a RUNNING parent run (its ``tags``) no longer runs, or None while it may."""
    silent = now - float(tags.get(names.DRIVER_HEARTBEAT, 0.0))
    if silent > DRIVER_GONE_AFTER_S:
        return f"its driver has been silent for {silent / 60:.0f} min"
    where = tags.get(names.DRIVER, "").split()
    if (len(where) == 4 and where[0] == socket.gethostname() and where[1] == _pid_namespace() and where[3]
            and _process_start(int(where[2])) != where[3]):
        return f"its driver (pid {where[2]} on {where[0]}) is no longer running"
    return None


class MlflowSink(Callback):
    """Per-epoch metrics, the final matrix and the job's status, from trial reports to the child runs.

    ``stopped``: job name -> epochs trained, for the search samples the suite's scheduler stops
    (``SearchScheduler.stopped``, filled before Tune hands the stopping report to callbacks)."""

    def __init__(self, client: MlflowClient, run_ids: dict[str, str], parent_id: str,
                 stopped: dict[str, int] | None = None):
        self.client, self.run_ids, self.parent_id = client, run_ids, parent_id
        self.stopped = stopped if stopped is not None else {}
        self.last_heartbeat = time.monotonic()
        self.failures: dict[str, str] = {}
        self.finished: set[str] = set()
        self.stopped_early: set[str] = set()
        self.busy_seconds = 0.0  # time jobs spent in training epochs and matrix evaluation

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last_heartbeat >= HEARTBEAT_EVERY_S:
            self.client.set_tag(self.parent_id, names.DRIVER_HEARTBEAT, str(time.time()))
            self.last_heartbeat = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        name = trial.config["job"]
        if isinstance(self.run_ids, JobRuns):
            self.run_ids.start(name)
        else:
            self.client.update_run(self.run_ids[name], status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = trial.config["job"]
        run_id = self.run_ids[name]
        if result.get("failed"):
            self._fail(name, result["failed"])
        elif "epoch" in result:  # an epoch's report (Tune marks it done when the search stops the job)
            step = int(result["epoch"])
            metrics = [mlflow.entities.Metric(k, float(v), int(time.time() * 1000), step)
                       for k, v in result.items() if k.startswith(EPOCH_KEYS) and isinstance(v, (int, float))]
            if metrics:
                self.client.log_batch(run_id, metrics=metrics)
            self.busy_seconds += float(result.get("epoch_time_s", 0.0)) + float(result.get("val_time_s", 0.0))
            if result.get("done") and name in self.stopped:
                self.record_stop(name, run_id, self.stopped[name])
        elif result.get("done"):
            if result.get("result_dir") is not None:  # the job's result folder (orchestrator.engine.results)
                with fetched_result(result["result_dir"]) as outcome:  # a path or an object-store URI
                    self.record_result(name, run_id, outcome)

    def record_result(self, name: str, run_id: str, outcome: JobOutcome) -> None:
        """A finished job's result folder into its run: cell metrics, MAdds and the matrix/ artifacts."""
        self.busy_seconds += outcome.eval_time_s
        now = int(time.time() * 1000)
        # resumed_at_epoch: visible even when a resumed job had no epochs left to run (killed during its matrix).
        values = {"num_classes": outcome.num_classes, "resumed_at_epoch": outcome.start_epoch}
        self.client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), now, 0) for k, v in values.items()])
        log_matrix(self.client, run_id, outcome.matrix, madds=outcome.madds or None, title=name,
                   predictions=outcome.predictions, gap_cdf=outcome.matrix.gap_cdf, figures=outcome.figures)
        self.client.set_terminated(run_id, status="FINISHED")
        self.finished.add(name)

    def record_stop(self, name: str, run_id: str, epochs: int) -> None:
        """A search sample its scheduler stopped: FINISHED without a matrix, tagged with the epochs it trained;
        its checkpoint stays in its folder (``--resume-stopped`` trains on from it)."""
        self.client.set_tag(run_id, names.EARLY_STOPPED, str(epochs))
        self.client.set_terminated(run_id, status="FINISHED")
        self.stopped_early.add(name)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._fail(trial.config["job"], _error_text(trial))

    def _fail(self, name: str, reason: str) -> None:
        self.failures[name] = reason
        run_id = self.run_ids[name]
        self.client.set_tag(run_id, names.ERROR, reason[-4000:])
        self.client.set_terminated(run_id, status="FAILED")


def _error_text(trial) -> str:
    """The last line of the trial's exception: the reason, not pages of traceback."""
    text = ""
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        text = Path(path).read_text(errors="replace")
    text = text or str(getattr(trial, "error_msg", "") or "unknown error")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):  # Ray wraps the worker's exception; the user's reason is the last "XError: ..." line
        if "Error:" in line or "Exception:" in line or "Diverged" in line:
            return line.strip()
    return lines[-1].strip() if lines else "unknown error"
