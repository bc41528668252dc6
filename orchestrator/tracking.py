"""MLflow conventions: how suites and jobs are recorded in the tracking store.

Layout: one MLflow experiment per suite (named after the suite); one parent run per ``resolab run``
invocation that records something (tag resolab.kind=suite); one child run per job (tag
resolab.kind=job, created when the job starts) carrying:
- params: the flattened job config, values rendered by ``jobspec.param_value``;
- tags: ``JOB_TAGS`` below, plus ``CHECKPOINT_DIR_TAG`` (where its final checkpoint stays) on every
  run that a trial trains or evaluates;
- per-epoch metrics (step = epoch): loss/<term>, acc1/r<res>, lr, img_per_s, mred_weight/r<res>;
- the final accuracy matrix (``analysis.report.log_matrix``).

The embedded default store is SQLite at ``<project>/.resolab/mlflow.db`` (``jobspec.resolve_tracking_uri``
makes it an absolute path, since Ray workers change directory). Only the driver creates the database
and experiments; workers get ids.
"""
from __future__ import annotations

import contextlib
import fcntl
import subprocess
from pathlib import Path

from jobspec import PROJECT_ROOT, training_hash

# The suite driver stamps its parent run with the time every HEARTBEAT_EVERY_S while it runs; a job
# whose driver has been silent for DRIVER_GONE_AFTER_S was interrupted (the driver was killed).
HEARTBEAT_TAG = "resolab.driver_heartbeat"
HEARTBEAT_EVERY_S = 30.0
DRIVER_GONE_AFTER_S = 120.0
# The trained model's identity (the config hash without eval.*): runs that share it share a model.
TRAINING_HASH_TAG = "resolab.training_hash"
# The job's stable checkpoint directory, absolute: a later evaluation finds the model there even when
# that suite ran with another --storage.
CHECKPOINT_DIR_TAG = "resolab.checkpoint_dir"
JOB_TAGS = ("resolab.kind", "resolab.suite", "resolab.job", "resolab.group", "resolab.method", "resolab.backbone",
            "resolab.config_hash", TRAINING_HASH_TAG, "resolab.code_version", "resolab.train_resolutions",
            "resolab.seed", "resolab.tag")


@contextlib.contextmanager
def store_creation_lock(uri: str):
    """Serialise the first opening of a SQLite store: MLflow's schema migration races when several
    processes create one database file at once (it can leave it half-migrated)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(db.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def code_version() -> str:
    """Git commit of the project (with -dirty when there are local changes), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def job_tags(suite_name: str, job, code: str) -> dict[str, str]:
    cfg = job.config
    return {
        "resolab.kind": "job", "resolab.suite": suite_name, "resolab.job": job.name, "resolab.group": job.group,
        "resolab.method": cfg.method.name, "resolab.backbone": cfg.model.backbone,
        "resolab.config_hash": job.hash, TRAINING_HASH_TAG: training_hash(cfg), "resolab.code_version": code,
        "resolab.train_resolutions": ",".join(str(r) for r in cfg.data.resolutions),
        "resolab.seed": str(cfg.train.seed), "resolab.tag": cfg.tag,
    }
