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
import os
import sqlite3
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


def sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def store_creation_lock(uri: str):
    """Serialise the first opening of a SQLite store (MLflow's schema migration races when several
    processes create one database file at once), and make that creation all-or-nothing (``create_store``)."""
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(db.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not db.exists():
                create_store(db)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_store(db: Path) -> None:
    """A new SQLite store, built beside ``db`` and renamed into place once MLflow has migrated it fully.
    MLflow creates the schema in dozens of steps that are not one transaction: a first command
    interrupted among them in place (Ctrl-C in its first seconds) would leave a store that neither
    resolab nor `mlflow db upgrade` can open. Interrupted here, it leaves nothing at ``db``."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    partial = db.with_name(db.name + ".partial")
    leftovers = (partial, partial.with_name(partial.name + "-journal"))
    try:
        for path in leftovers:  # of a creation killed outright (kill -9); the lock says nobody else builds
            path.unlink(missing_ok=True)
        store = SqlAlchemyStore(f"sqlite:///{partial}", (db.parent / "artifacts").resolve().as_uri())
        store.engine.dispose()
        os.replace(partial, db)
    finally:
        for path in leftovers:
            path.unlink(missing_ok=True)


def broken_store(db: Path) -> str | None:
    """Why the SQLite store ``db``, which exists but MLflow could not open, cannot be used and what to do,
    in one line; None when it is no SQLite database at all (then the URI is what is wrong)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
            runs = connection.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
            revision = (connection.execute("select version_num from alembic_version").fetchone()
                        if "alembic_version" in tables else None)
    except sqlite3.DatabaseError:
        return None
    if not runs:
        return (f"the MLflow store {db} was left half-created (its first schema migration was interrupted) "
                f"and holds no runs: delete it (rm {db}) and run the command again, which creates a new one")
    return (f"MLflow cannot open the store {db}, which holds {runs} run{'s' if runs > 1 else ''} (schema revision "
            f"{revision[0] if revision else 'unknown'}); keep it: back it up (cp {db} {db}.bak), then migrate "
            f"it with `mlflow db upgrade sqlite:///{db}`")


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail before anything is recorded if the tracking store cannot be reached or opened
    (TrackingUnavailable, one line). A new SQLite store is created whole under ``store_creation_lock``;
    one that exists but does not open is explained, not blamed on a --tracking-uri the user never set."""
    from records import store as tracking_check

    try:
        tracking_check.check_tracking(uri, timeout, opening=store_creation_lock)
    except tracking_check.TrackingUnavailable:
        db = sqlite_file(uri)
        why = broken_store(db) if db is not None and db.is_file() else None
        if why is None:
            raise
        raise tracking_check.TrackingUnavailable(why) from None


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
