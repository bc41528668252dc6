"""Finished jobs are trained once per tracking store, not once per suite.

Paper tables share jobs: the R18 SAN of SAN Table 1 is also a row of Tables 2 and 5, and the R18 RS-Net
of RS-Nets Table 2 is the base of Tables 5 and 6. When a suite holds a job whose config hash already has
a FINISHED run in another suite's experiment, that run is copied into this suite's experiment (params,
tags, every metric's full history, every artifact) instead of being trained again. The copy is tagged
``records.names.REUSED_FROM`` with the source run id, and keeps the source's code version and run times, so
it says truthfully which code trained it and when. ``resolab run --no-reuse`` trains everything anew.
"""
from __future__ import annotations

import tempfile

import mlflow
from mlflow.tracking import MlflowClient

from records import names
from records.batch import log_batched


def finished_job_runs(client: MlflowClient, exclude_experiment: str | None = None) -> list:
    """Every FINISHED job run of the tracking store (all experiments but ``exclude_experiment``), newest first;
    not the search samples stopped early, which have no matrix and a model trained only part of the way."""
    experiment_ids = [e.experiment_id for e in client.search_experiments(max_results=50000)
                      if e.experiment_id != exclude_experiment]
    if not experiment_ids:
        return []
    runs = client.search_runs(experiment_ids, names.FINISHED_JOB_FILTER,
                              max_results=50000, order_by=["attributes.end_time DESC"])
    return [run for run in runs if not run.data.tags.get(names.EARLY_STOPPED)]


def copy_run(client: MlflowClient, source, experiment_id: str, tags: dict[str, str]) -> str:
    """A FINISHED copy of ``source`` in ``experiment_id``; ``tags`` override the source's resolab.* tags."""
    # What the source was to its own suite's search is not what the copy is to this one's (``tags`` say that).
    kept = {k: v for k, v in source.data.tags.items() if k.startswith(names.PREFIX) and k not in names.SEARCH_TAGS}
    merged = {**kept, **tags, names.CODE_VERSION: kept.get(names.CODE_VERSION, "unknown"),
              names.REUSED_FROM: source.info.run_id}
    run_id = client.create_run(experiment_id, start_time=source.info.start_time, run_name=tags.get(names.JOB),
                               tags=merged).info.run_id
    log_batched(client, run_id,
                metrics=[m for key in source.data.metrics for m in client.get_metric_history(source.info.run_id, key)],
                params=[mlflow.entities.Param(k, v) for k, v in source.data.params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        if client.list_artifacts(source.info.run_id):
            client.log_artifacts(run_id, client.download_artifacts(source.info.run_id, "", tmp))
    client.set_terminated(run_id, status="FINISHED", end_time=source.info.end_time)
    return run_id
