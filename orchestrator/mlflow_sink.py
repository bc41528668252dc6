"""The suite driver's MLflow side: the store check, the suite's parent run, one child run per job,
and a Tune callback that records what trials report. All writes happen in the driver process.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import logging

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from analysis.matrix import Matrix
from analysis.mlflow_batch import log_batched
from analysis.report import log_matrix
from jobspec import flatten, param_value
from orchestrator.reuse import copy_run, finished_runs_by_hash
from orchestrator.tracking import HEARTBEAT_EVERY_S, HEARTBEAT_TAG, code_version, job_tags, store_creation_lock

logging.getLogger("mlflow").setLevel(logging.WARNING)  # after import: mlflow sets its own level on import

EPOCH_KEYS = ("loss/", "acc1/", "mred_weight/", "lr", "img_per_s", "epoch_time_s", "val_time_s", "world_size",
              "start_epoch")


class TrackingUnavailable(RuntimeError):
    pass


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail before anything trains if the tracking store cannot be reached or opened."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingUnavailable(f"MLflow server {uri} answered /health with HTTP {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingUnavailable(
                f"cannot reach the MLflow tracking server at {uri} ({exc}). Start it, fix --tracking-uri / "
                "MLFLOW_TRACKING_URI, or leave both unset to use the project's SQLite file.") from None
        return
    try:
        with store_creation_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 — any failure here means "unusable store"
        raise TrackingUnavailable(f"cannot open the MLflow tracking store {uri}: {exc}") from None


def artifact_location(uri: str) -> str | None:
    """Artifacts of the embedded SQLite store live beside it (not in ./mlruns of whatever directory
    the command ran in); a tracking server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None


class SuiteTracking:
    """Experiment, parent run and child runs of one ``resolab run`` invocation."""

    def __init__(self, uri: str, suite, command: str):
        self.client = MlflowClient(uri)
        self.uri, self.suite = uri, suite
        experiment = self.client.get_experiment_by_name(suite.name)
        self.experiment_id = (experiment.experiment_id if experiment
                              else self.client.create_experiment(suite.name, artifact_location=artifact_location(uri)))
        self.parent_id = self.client.create_run(
            self.experiment_id, run_name=f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"resolab.kind": "suite", "resolab.suite": suite.name, "resolab.command": command,
                  "resolab.code_version": code_version(), HEARTBEAT_TAG: str(time.time())}).info.run_id

    def job_runs(self) -> list:
        return self.client.search_runs([self.experiment_id], "tags.`resolab.kind` = 'job'", max_results=50000)

    def prepare(self, jobs, reuse: bool = True) -> tuple[list, list, dict[str, str]]:
        """Split jobs into (already finished here, copied from another suite's finished run, {name: run id
        to record into}). An unfinished run of the same config hash from an earlier invocation is reused,
        so a rerun creates no duplicates."""
        runs = self.job_runs()
        finished = {r.data.tags.get("resolab.config_hash") for r in runs if r.info.status == "FINISHED"}
        unfinished: dict[str, str] = {}
        for r in sorted(runs, key=lambda r: r.info.start_time or 0):
            if r.info.status != "FINISHED":
                unfinished[r.data.tags.get("resolab.config_hash")] = r.info.run_id
        elsewhere = finished_runs_by_hash(self.client, self.experiment_id) if reuse else {}
        done, copied, run_ids = [], [], {}
        for job in jobs:
            if job.hash in finished:
                done.append(job)
            elif job.hash in elsewhere:
                if job.hash in unfinished:  # superseded by the copy
                    self.client.set_terminated(unfinished[job.hash], status="KILLED")
                copy_run(self.client, elsewhere[job.hash], self.experiment_id, self._child_tags(job))
                copied.append(job)
            elif job.hash in unfinished:
                run_ids[job.name] = unfinished[job.hash]
                self.client.set_tag(run_ids[job.name], "mlflow.parentRunId", self.parent_id)
                self.client.update_run(run_ids[job.name], status="SCHEDULED")
            else:
                run_ids[job.name] = self._new_child(job)
        return done, copied, run_ids

    def _child_tags(self, job) -> dict[str, str]:
        return {**job_tags(self.suite.name, job, code_version()), "mlflow.parentRunId": self.parent_id}

    def _new_child(self, job) -> str:
        run_id = self.client.create_run(self.experiment_id, run_name=job.name, tags=self._child_tags(job)).info.run_id
        self.client.update_run(run_id, status="SCHEDULED")
        log_batched(self.client, run_id,
                    params=[mlflow.entities.Param(k, param_value(v)) for k, v in flatten(job.config).items()])
        return run_id

    def finish_suite(self, failed: bool) -> None:
        self.client.set_terminated(self.parent_id, status="FAILED" if failed else "FINISHED")


class MlflowSink(Callback):
    """Per-epoch metrics, the final matrix and the job's status, from trial reports to the child runs."""

    def __init__(self, client: MlflowClient, run_ids: dict[str, str], parent_id: str):
        self.client, self.run_ids, self.parent_id = client, run_ids, parent_id
        self.last_heartbeat = time.monotonic()
        self.failures: dict[str, str] = {}
        self.finished: set[str] = set()
        self.busy_seconds = 0.0  # time jobs spent in training epochs and matrix evaluation

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self.last_heartbeat >= HEARTBEAT_EVERY_S:
            self.client.set_tag(self.parent_id, HEARTBEAT_TAG, str(time.time()))
            self.last_heartbeat = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.client.update_run(self.run_ids[trial.config["job"]], status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = trial.config["job"]
        run_id = self.run_ids[name]
        if result.get("failed"):
            self._fail(name, result["failed"])
        elif result.get("done"):
            self.busy_seconds += float(result.get("eval_time_s", 0.0))
            if result.get("matrix") is not None:
                madds = {int(k): v for k, v in (result.get("madds") or {}).items()}
                self.client.log_metric(run_id, "num_classes", float(result["num_classes"]))
                # Visible even when a resumed job had no epochs left to run (killed during its matrix).
                self.client.log_metric(run_id, "resumed_at_epoch", float(result.get("start_epoch", 0)))
                gap_cdf = pd.DataFrame(result["gap_cdf"]) if result.get("gap_cdf") else None
                log_matrix(self.client, run_id, Matrix(pd.DataFrame(result["matrix"])), madds=madds or None,
                           title=name, predictions=result.get("predictions"), gap_cdf=gap_cdf)
                self.client.set_terminated(run_id, status="FINISHED")
                self.finished.add(name)
        else:
            step = int(result.get("epoch", 0))
            metrics = [mlflow.entities.Metric(k, float(v), int(time.time() * 1000), step)
                       for k, v in result.items() if k.startswith(EPOCH_KEYS) and isinstance(v, (int, float))]
            if metrics:
                self.client.log_batch(run_id, metrics=metrics)
            self.busy_seconds += float(result.get("epoch_time_s", 0.0)) + float(result.get("val_time_s", 0.0))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._fail(trial.config["job"], _error_text(trial))

    def _fail(self, name: str, reason: str) -> None:
        self.failures[name] = reason
        run_id = self.run_ids[name]
        self.client.set_tag(run_id, "resolab.error", reason[-4000:])
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
