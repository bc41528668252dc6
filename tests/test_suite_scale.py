"""Tune reuses a trial process for the next job that asks for the same resources: each job still
computes exactly what it computes alone."""
from __future__ import annotations

import shutil

from analysis.report import read_matrix
from jobspec import load_suite
from orchestrator.cluster.suite import RunOptions, run_suite
from orchestrator.engine.job import run_job
from orchestrator.engine.loop import LocalRuntime
from tests.test_ray_suite import runs_of, write_suite


def test_a_reused_trial_process_computes_each_job_as_if_alone(local_ray, home, tmp_path, empty_db):
    # Two CPUs a job on the session's two-CPU Ray: one slot, so the second job runs in the first one's process.
    # Different methods and seeds: a model, a random stream or a thread count left over would show.
    path = write_suite(tmp_path, "reused", {"resources.cpus_per_worker": 2},
                       cases=[{"method.name": "san", "train.seed": 3}, {"method.name": "rsnet", "train.seed": 4}])
    suite = load_suite(path)
    shutil.copy(empty_db, tmp_path / "mlflow.db")  # migrated already
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = run_suite(suite, RunOptions(tracking_uri=uri, storage=str(tmp_path / "storage")))
    assert (sorted(outcome.finished), outcome.failed) == (sorted(j.name for j in suite.jobs), {})
    assert outcome.trial_processes == 1

    client, runs = runs_of(uri, "reused")
    by_job = {r.data.tags["resolab.job"]: r.info.run_id for r in runs}
    for job in suite.jobs:  # the second ran after the first in its process; each equals a run of its own here
        alone = run_job(job.config, LocalRuntime(device="cpu", log=lambda msg: None), job.hash)
        recorded = read_matrix(client, by_job[job.name]).frame
        expected = alone.matrix.frame[recorded.columns].astype(recorded.dtypes.to_dict()).reset_index(drop=True)
        assert recorded.equals(expected), job.name
        loss = client.get_metric_history(by_job[job.name], "loss/total")
        assert [m.value for m in loss] == [alone.trained.history[0]["loss/total"]]

