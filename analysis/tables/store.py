"""The MLflow side of the tables: the job runs a table reads, their artifacts, and where a table is logged.

Reads FINISHED job runs (tag ``records.names.KIND`` = job) of a suite (= MLflow experiment); logs a
table's files under ``tables/`` of the suite's newest parent run that holds finished jobs, or of a run
named ``tables`` made for it. The client is used, never ``mlflow.search_runs``, so the process-wide
tracking URI is left alone.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from analysis.tables.render import write_table_files
from records import names

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from analysis.tables.model import Table


def fetch_runs(client: MlflowClient, suite: str, extra_filter: str | None = None) -> pd.DataFrame:
    """Job runs of one suite as the frame ``mlflow.search_runs`` returns, plus a ``suite`` column."""
    experiment = client.get_experiment_by_name(suite)
    if experiment is None:
        return pd.DataFrame()
    query = names.JOB_FILTER + (f" and {extra_filter}" if extra_filter else "")
    records, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], query, max_results=50000, page_token=token)
        records += [_run_record(run, suite) for run in page]
        token = page.token
        if not token:
            return pd.DataFrame.from_records(records)


def _run_record(run, suite: str) -> dict:
    record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "suite": suite,
              "status": run.info.status, "start_time": run.info.start_time or 0, "end_time": run.info.end_time}
    record.update({f"params.{k}": v for k, v in run.data.params.items()})
    record.update({f"tags.{k}": v for k, v in run.data.tags.items()})
    record.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    return record


def suites_with_job_runs(client: MlflowClient) -> list[str]:
    return [experiment.name for experiment in client.search_experiments()
            if client.search_runs([experiment.experiment_id], names.JOB_FILTER, max_results=1)]


class SuiteRuns:
    """Job runs per suite, fetched once per invocation."""

    def __init__(self, client, extra_filter: str | None):
        self.client, self.extra_filter, self.cache = client, extra_filter, {}

    def __call__(self, suite: str) -> pd.DataFrame:
        if suite not in self.cache:
            self.cache[suite] = fetch_runs(self.client, suite, self.extra_filter)
        return self.cache[suite]

    def has(self, suite: str) -> bool:
        return len(self(suite)) > 0


class RunArtifact:
    """One artifact of each run (``reader(client, run_id)``), downloaded once per invocation; None for a
    run without it."""

    def __init__(self, client, reader):
        self.client, self.reader, self.cache = client, reader, {}

    def __call__(self, run_id: str):
        if run_id not in self.cache:
            self.cache[run_id] = self.reader(self.client, run_id)
        return self.cache[run_id]


def parent_run_id(client: MlflowClient, suite: str) -> str:
    """The suite's newest parent run that holds finished jobs (not a later invocation that finished
    none, failed, or had nothing to do); else the newest ``tables`` run made earlier; else a new one."""
    experiment = client.get_experiment_by_name(suite)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(suite)
    finished = client.search_runs([experiment_id], names.FINISHED_JOB_FILTER, max_results=50000)
    holders = {run.data.tags.get(names.PARENT_RUN) for run in finished}
    parents = client.search_runs([experiment_id], names.tag_equals(names.KIND, names.SUITE_RUN), max_results=50000,
                                 order_by=["attributes.start_time DESC"])
    for run in parents:
        if run.info.run_id in holders:
            return run.info.run_id
    runs = client.search_runs([experiment_id], names.tag_equals(names.KIND, names.TABLES_RUN), max_results=1,
                              order_by=["attributes.start_time DESC"])
    if runs:
        return runs[0].info.run_id
    # Tagged "tables", not "suite": it is not an invocation of the suite, only a home for its tables.
    run = client.create_run(experiment_id, run_name="tables", tags={names.KIND: names.TABLES_RUN, names.SUITE: suite})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def log_table(client: MlflowClient, suite: str, table: Table) -> str:
    """Log the table's files under tables/ of the run ``parent_run_id`` picks; returns that run's id."""
    run_id = parent_run_id(client, suite)
    with tempfile.TemporaryDirectory() as tmp:
        write_table_files(table, Path(tmp))
        client.log_artifacts(run_id, tmp, artifact_path="tables")
    return run_id
