"""The driver's environment that trials and Ray Train workers need: they are Ray processes, started
with the cluster's environment, not the driver's."""
from __future__ import annotations

import json
import os

# Fault injection for tests and drills: the named rank exits hard once, at the start of that epoch.
CRASH_EPOCH_ENV = "RESOLAB_CRASH_AT_EPOCH"
CRASH_RANK_ENV = "RESOLAB_CRASH_RANK"

# The variables pyarrow and the cloud SDKs read for an object store's endpoint, region and credentials.
STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "GCS_", "AZURE_STORAGE_")

# Set by Ray in the entrypoint of a Ray Job: the job's runtime environment, as submitted.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def forwarded_env() -> dict[str, str]:
    """Where project state lives, the object store's endpoint and credentials, fault injection."""
    keep = (CRASH_EPOCH_ENV, CRASH_RANK_ENV, "RESOLAB_HOME", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith(STORAGE_ENV_PREFIXES)}


def in_ray_job() -> bool:
    """True in the entrypoint of a Ray Job (``ray job submit``)."""
    return RAY_JOB_CONFIG_ENV in os.environ


def job_runtime_env() -> dict:
    """``ray.init``'s runtime env: ``forwarded_env`` for every process of this Ray job (Tune's own
    checkpoint uploads in a trial included), less the variables a Ray Job's submission already sets
    (Ray refuses the same key twice)."""
    submitted = {}
    if in_ray_job():
        submitted = (json.loads(os.environ[RAY_JOB_CONFIG_ENV]).get("runtime_env") or {}).get("env_vars") or {}
    env = {k: v for k, v in forwarded_env().items() if k not in submitted}
    return {"env_vars": env} if env else {}
