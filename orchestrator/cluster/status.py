"""``resolab status``: where each job of a suite stands, from MLflow and the job checkpoints."""
from __future__ import annotations

import dataclasses
import time

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.engine import checkpoint as ckpt
from orchestrator.cluster.evaluate_only import ModelStore
from records import names
from records import storage as files
from records.layout import default_storage, job_dir
from records.runs import DRIVER_GONE_AFTER_S
from records.store import check_store, resolve_tracking_uri

# A KILLED run was ended by Ctrl-C (or superseded by a copy or an evaluation, which then wins as FINISHED).
STATE_OF_RUN = {"FINISHED": "done", "RUNNING": "running", "SCHEDULED": "pending", "FAILED": "failed",
                "KILLED": "interrupted"}


def job_states(suite, tracking_uri: str | None = None, now: float | None = None) -> dict[str, tuple[str, str]]:
    """job name -> (state, detail): done if the job's config hash has a FINISHED run, else its newest run
    decides; a running or pending run whose suite driver went silent is "interrupted", as is a KILLED one."""
    return {name: (state, detail) for name, (state, detail, _) in job_runs(suite, tracking_uri, now).items()}


def suite_job_runs(suite, tracking_uri: str | None = None) -> tuple[MlflowClient, list]:
    """The store's client and the suite's job runs."""
    uri = resolve_tracking_uri(tracking_uri)
    # One line in seconds for a store that is not there, instead of MLflow's minutes of retries.
    check_store(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite.name)
    return client, client.search_runs([experiment.experiment_id], names.JOB_FILTER,
                                      max_results=50000) if experiment else []


def job_runs(suite, tracking_uri: str | None = None, now: float | None = None,
             read=None) -> dict[str, tuple[str, str, str]]:
    """job name -> (state, detail, the id of the run that decides it, '' when there is none); ``read``:
    ``suite_job_runs``'s answer when the caller has it."""
    client, runs = read or suite_job_runs(suite, tracking_uri)
    newest = {}
    for run in sorted(runs, key=lambda r: (r.info.status == "FINISHED", r.info.start_time or 0)):
        newest[run.data.tags.get(names.CONFIG_HASH)] = run
    drivers: dict[str, str | None] = {}  # parent run id -> why its driver is gone, or None if alive
    states = {}
    for job in suite.jobs:
        run = newest.get(job.hash)
        if run is None:
            states[job.name] = ("pending", "", "")
            continue
        state = STATE_OF_RUN.get(run.info.status, run.info.status.lower())
        detail = run.data.tags.get(names.ERROR, "")
        if state in ("running", "pending"):
            parent = run.data.tags.get(names.PARENT_RUN, "")
            if parent not in drivers:
                drivers[parent] = driver_gone(client, parent, time.time() if now is None else now)
            if drivers[parent]:
                state, detail = "interrupted", f"{drivers[parent]}; run the same `resolab run` again to resume"
        elif state == "interrupted":
            detail = detail or "its run was killed; run the same `resolab run` again to resume"
        elif state == "done" and run.data.tags.get(names.EARLY_STOPPED):
            state = "stopped"
            detail = "stopped early by its search; `resolab run --resume-stopped` trains it to the end"
        elif state == "done" and run.data.tags.get(names.REUSED_FROM):
            detail = f"copied from run {run.data.tags[names.REUSED_FROM]}"
        elif state == "done" and run.data.tags.get(names.EVALUATED_FROM):
            detail = f"evaluated from the model trained by run {run.data.tags[names.EVALUATED_FROM]}"
        states[job.name] = (state, detail, run.info.run_id)
    return states


def with_repeats(suite, runs: list):
    """The suite with the repeats of its searches' winners (``search.repeat``) known from its job ``runs``."""
    if suite.search is None or suite.search.repeat <= 1:
        return suite
    from orchestrator.cluster.search_repeats import repeats_of_best
    return dataclasses.replace(suite, jobs=[*suite.jobs, *repeats_of_best(suite, runs, say=lambda line: None)])


def driver_gone(client: MlflowClient, parent_id: str, now: float) -> str | None:
    """Why the suite driver of ``parent_id`` no longer runs, or None while it does."""
    try:
        parent = client.get_run(parent_id)
    except MlflowException:
        return "its suite run is gone"
    if parent.info.status != "RUNNING":
        return f"its suite run ended {parent.info.status}"
    silent = now - float(parent.data.tags.get(names.DRIVER_HEARTBEAT, 0.0))
    if silent > DRIVER_GONE_AFTER_S:
        return f"its driver has been silent for {silent / 60:.0f} min"
    return None


def checkpoint_epoch(folder: str) -> int | None:
    """The epoch of the checkpoint in a job's folder (a path or an object-store URI), None if it has none."""
    import torch
    with files.local_folder(folder, [ckpt.CHECKPOINT_FILE]) as local:
        return None if local is None else int(torch.load(local / ckpt.CHECKPOINT_FILE, weights_only=True, mmap=True)["epoch"])


def suite_status(suite, tracking_uri: str | None = None, storage: str | None = None) -> str:
    read = suite_job_runs(suite, tracking_uri)
    suite = with_repeats(suite, read[1])
    states = job_runs(suite, tracking_uri, read=read)
    storage = storage or default_storage()
    models = None  # the store's finished models, looked up once a job is found pending
    width = max(len(job.name) for job in suite.jobs)
    lines = []
    for job in suite.jobs:
        state, detail, run_id = states[job.name]
        epoch = None if state == "done" else checkpoint_epoch(job_dir(storage, suite.name, job.name, job.hash))
        if epoch is not None:
            detail = f"checkpoint after epoch {epoch + 1}/{job.config.train.epochs}" + (f"; {detail}" if detail else "")
        elif state == "pending":
            models = models or ModelStore(read[0], storage)
            if job.hash in models.finished_hashes:
                detail = "finished in another suite: `resolab run` or `resolab evaluate` copies that run"
            elif (model := models.find(job)) is not None:
                detail = f"trained model of run {model.trained_by} on disk: `resolab evaluate` evaluates it, no training"
        # The run id is what `resolab export` and `resolab pick` take (a done job's is its FINISHED run).
        run = f"run {run_id}" if run_id else "no run yet"
        lines.append(f"  {state:<11} {job.name:<{width}}  {run}" + (f"  ({detail})" if detail else ""))
    counts = {s: sum(1 for st, _, _ in states.values() if st == s)
              for s in ("done", "stopped", "running", "interrupted", "failed", "pending")}
    stopped = f"  stopped {counts['stopped']}" if suite.search is not None else ""
    head = (f"{suite.name}: done {counts['done']}/{len(suite.jobs)}{stopped}  running {counts['running']}  "
            f"interrupted {counts['interrupted']}  failed {counts['failed']}  pending {counts['pending']}")
    return "\n".join([head, *lines])
