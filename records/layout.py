"""Where a job's files live on storage: the one place that builds a storage path.

``<storage>/<suite>/jobs/<job>-<hash>/`` holds a job's checkpoints and its results; ``<storage>`` is
``--storage``, by default ``<RESOLAB_HOME>/ray``. The folder outlives every Ray trial directory, so a later
``resolab run`` resumes from it and a later evaluation finds the trained model in it.
"""
from __future__ import annotations

from pathlib import Path

from jobspec import resolab_home


def default_storage() -> str:
    return str(resolab_home() / "ray")


def job_dir(storage: str, suite: str, job_name: str, job_hash: str) -> Path:
    return Path(storage) / suite / "jobs" / f"{job_name}-{job_hash}"
