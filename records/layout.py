"""Where a job's files live on storage: the one place that builds a storage location.

``<storage>/<suite>/jobs/<job>-<hash>/`` holds a job's checkpoints and its results; ``<storage>`` is
``--storage`` (a path every node sees, or an object-store URI: ``records.storage``), by default
``<RESOLAB_HOME>/ray``. The folder outlives every Ray trial directory, so a later ``resolab run``
resumes from it and a later evaluation finds the trained model in it.
"""
from __future__ import annotations

from jobspec import resolab_home
from records import storage as store_files


def default_storage() -> str:
    return str(resolab_home() / "ray")


def job_dir(storage: str, suite: str, job_name: str, job_hash: str) -> str:
    """The job's folder: a path, or a URI when ``storage`` is an object store."""
    return store_files.join(store_files.resolve(storage), suite, "jobs", f"{job_name}-{job_hash}")
