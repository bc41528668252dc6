"""``resolab status``: where each job of a suite stands, from MLflow and the job checkpoints."""
from __future__ import annotations

from mlflow.tracking import MlflowClient

from orchestrator import checkpoint as ckpt
from orchestrator.ray_job import job_dir
from orchestrator.suite import default_storage
from orchestrator.tracking import resolve_tracking_uri, store_creation_lock

STATE_OF_RUN = {"FINISHED": "done", "RUNNING": "running", "SCHEDULED": "pending", "FAILED": "failed",
                "KILLED": "failed"}


def job_states(suite, tracking_uri: str | None = None) -> dict[str, tuple[str, str]]:
    """job name -> (state, detail); the newest run of the job's config hash decides."""
    uri = resolve_tracking_uri(tracking_uri)
    with store_creation_lock(uri):
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(suite.name)
    runs = client.search_runs([experiment.experiment_id], "tags.`resolab.kind` = 'job'",
                              max_results=50000) if experiment else []
    newest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        newest[run.data.tags.get("resolab.config_hash")] = run
    states = {}
    for job in suite.jobs:
        run = newest.get(job.hash)
        if run is None:
            states[job.name] = ("pending", "")
        else:
            states[job.name] = (STATE_OF_RUN.get(run.info.status, run.info.status.lower()),
                                run.data.tags.get("resolab.error", ""))
    return states


def suite_status(suite, tracking_uri: str | None = None, storage: str | None = None) -> str:
    import torch
    states = job_states(suite, tracking_uri)
    lines = []
    for job in suite.jobs:
        state, detail = states[job.name]
        path = job_dir(storage or default_storage(), suite.name, job.name, job.hash) / ckpt.CHECKPOINT_FILE
        if state != "done" and path.exists():
            epoch = int(torch.load(path, weights_only=True)["epoch"])
            detail = f"checkpoint after epoch {epoch + 1}/{job.config.train.epochs}" + (f"; {detail}" if detail else "")
        lines.append(f"  {state:<8} {job.name}" + (f"  ({detail})" if detail else ""))
    counts = {s: sum(1 for st, _ in states.values() if st == s) for s in ("done", "running", "failed", "pending")}
    head = (f"{suite.name}: done {counts['done']}/{len(suite.jobs)}  running {counts['running']}  "
            f"failed {counts['failed']}  pending {counts['pending']}")
    return "\n".join([head, *lines])
