"""Storage that every node of the cluster reaches, checked before a suite records or trains anything.

A job's trial may run on any node, and what it leaves (checkpoints, the result folder) is read later by
the driver and by other jobs' trials on other nodes. An object store is reached from everywhere (its
credentials are forwarded to every trial: ``trial_env``); a path must be one every node mounts, which
only the nodes themselves can tell: each node with CPUs or GPUs reads a probe file the driver wrote.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from orchestrator.cluster.trial_env import in_ray_job
from records import storage
from records.storage import StorageUnavailable


def durable_defaults(storage_option: str | None, tracking_option: str | None) -> None:
    """In a Ray Job the project folder is Ray's temporary copy of the submitted working dir, deleted when
    the job ends: the default storage and tracking store would vanish with it."""
    if not in_ray_job() or "RESOLAB_HOME" in os.environ:
        return
    missing = [flag for flag, value in (("--storage", storage_option),
                                        ("--tracking-uri", tracking_option or os.environ.get("MLFLOW_TRACKING_URI")))
               if value is None]
    if missing:
        raise StorageUnavailable(
            f"resolab runs here as a Ray Job, whose working dir is a temporary copy that Ray deletes: pass "
            f"{' and '.join(missing)} (storage every node reaches, e.g. --storage s3://bucket/prefix, and a "
            "tracking store that outlives the job, e.g. --tracking-uri http://mlflow-host:5000), or set RESOLAB_HOME "
            "to a durable folder")


def _sees(path: str, token: str) -> bool:
    file = Path(path)
    return file.is_file() and file.read_text() == token


def check_nodes_see(location: str) -> None:
    """Every alive node with CPUs or GPUs reads the probe file at ``location`` (a path), else one line
    naming ``--storage``. Needs a connected Ray; a one-node cluster passes at once."""
    if storage.is_remote(location):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != here
             and (n["Resources"].get("CPU", 0) > 0 or n["Resources"].get("GPU", 0) > 0)]
    if not nodes:
        return
    token = uuid.uuid4().hex
    probe = storage.join(location, f".resolab-probe-{token[:12]}")
    storage.write_text(probe, token)
    sees = ray.remote(num_cpus=0, max_retries=0)(_sees)
    try:
        refs = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(probe, token) for n in nodes]
        answers = ray.get(refs, timeout=120)
    finally:
        storage.delete(probe)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, answers) if not ok]
    if blind:
        raise StorageUnavailable(
            f"--storage {location} is a folder that the node(s) at {', '.join(sorted(set(blind)))} do not see (a "
            "disk of this machine only): their jobs' models would be lost. Pass storage every node reaches: a "
            "shared mount (NFS) at the same path everywhere, or an object store (--storage s3://bucket/prefix)")
