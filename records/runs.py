"""Creating resolab's MLflow runs: a suite's experiment, its parent run, and the tags of a job's run.

The suite driver (``orchestrator.cluster``) and ``resolab evaluate-model`` (``orchestrator.deploy``) both
record job runs; the tags that let ``analysis`` and a later ``resolab run`` find a job's run are built here,
for both.
"""
from __future__ import annotations

import subprocess
import time

from jobspec import PROJECT_ROOT, training_hash
from records import names
from records.store import artifact_location, redacted

# The suite driver stamps its parent run with the time every HEARTBEAT_EVERY_S while it runs; a job
# whose driver has been silent for DRIVER_GONE_AFTER_S was interrupted (the driver was killed).
HEARTBEAT_EVERY_S = 30.0
DRIVER_GONE_AFTER_S = 120.0
# The tags every job run carries (``job_run_tags``).
JOB_TAGS = (names.KIND, names.SUITE, names.JOB, names.GROUP, names.METHOD, names.BACKBONE, names.CONFIG_HASH,
            names.TRAINING_HASH, names.CODE_VERSION, names.TRAIN_RESOLUTIONS, names.SEED, names.USER_TAG)


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


def suite_experiment(client, suite: str, uri: str) -> str:
    """The id of the suite's experiment, created (artifacts beside a SQLite store) when it is new."""
    experiment = client.get_experiment_by_name(suite)
    if experiment:
        return experiment.experiment_id
    return client.create_experiment(suite, artifact_location=artifact_location(uri))


def job_run_tags(suite: str, job: str, group: str, cfg, config_hash: str, trained_as: str, code: str) -> dict[str, str]:
    """The ``JOB_TAGS`` of one job's run; ``trained_as`` is the model's training hash."""
    return {
        names.KIND: names.JOB_RUN, names.SUITE: suite, names.JOB: job, names.GROUP: group,
        names.METHOD: cfg.method.name, names.BACKBONE: cfg.model.backbone,
        names.CONFIG_HASH: config_hash, names.TRAINING_HASH: trained_as, names.CODE_VERSION: code,
        names.TRAIN_RESOLUTIONS: ",".join(str(r) for r in cfg.data.resolutions),
        names.SEED: str(cfg.train.seed), names.USER_TAG: cfg.tag,
    }


def job_tags(suite_name: str, job, code: str) -> dict[str, str]:
    """The tags of a suite job's run (``jobspec.Job``), and what it is to its search if it is in one."""
    tags = job_run_tags(suite_name, job.name, job.group, job.config, job.hash, training_hash(job.config), code)
    if job.search is not None:
        tags.update({names.SEARCH: job.search.group, names.SEARCH_METRIC: job.search.metric,
                     names.SEARCH_MODE: job.search.mode, names.SEARCH_ROLE: job.search.role})
    return tags


def suite_run_tags(suite: str, command: str, driver: str) -> dict[str, str]:
    """The tags of a ``resolab run`` invocation's parent run (a password in a URI of the command line is
    recorded as ***); its heartbeat starts now."""
    return {names.KIND: names.SUITE_RUN, names.SUITE: suite, names.COMMAND: redacted(command),
            names.CODE_VERSION: code_version(), names.DRIVER_HEARTBEAT: str(time.time()), names.DRIVER: driver}
