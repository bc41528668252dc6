"""A job finished in one suite is copied, not retrained, when another suite holds the same config."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis.matrix import COLUMNS, Matrix
from analysis.report import log_matrix, read_matrix
from jobspec import load_suite
from orchestrator.cluster.mlflow_sink import SuiteTracking
from records.names import REUSED_FROM as REUSED_FROM_TAG
from records.runs import job_tags

JOB = {"model": {"backbone": "resnet_tiny", "small_input": True, "width": 8}, "method": {"name": "rsnet"},
       "data": {"resolutions": [24, 16]}, "train": {"epochs": 2}}
MATRIX = Matrix(pd.DataFrame.from_records(
    [("fixed", r, t, 40.0 + r + t / 8, 90.0) for r in (24, 16) for t in (24, 20, 16)], columns=COLUMNS))


def suite_file(tmp_path, name: str, lrs: list[float]):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "job": JOB, "grid": {"train.lr": lrs}}))
    return load_suite(path)


@pytest.fixture
def uri(empty_db, tmp_path):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def record_job(client: MlflowClient, experiment_id: str, suite_name: str, job, status: str) -> str:
    """A job run as a suite would leave it: params, two epochs of metrics, the matrix and its artifacts."""
    run_id = client.create_run(experiment_id, run_name=job.name,
                               tags=job_tags(suite_name, job, "abc123")).info.run_id
    client.log_param(run_id, "train.lr", str(job.config.train.lr))
    for epoch, loss in enumerate((2.5, 1.25)):
        client.log_metric(run_id, "loss/total", loss, step=epoch)
    log_matrix(client, run_id, MATRIX)
    client.set_terminated(run_id, status=status)
    return run_id


def test_finished_job_of_another_suite_is_copied_with_history_and_artifacts(uri, tmp_path):
    client = MlflowClient(uri)
    first = suite_file(tmp_path, "first", [0.1, 0.2])
    first_tracking = SuiteTracking(uri, first, "resolab run first.yaml")
    finished = record_job(client, first_tracking.experiment_id, "first", first.jobs[0], "FINISHED")
    record_job(client, first_tracking.experiment_id, "first", first.jobs[1], "FAILED")

    second = suite_file(tmp_path, "second", [0.1, 0.2, 0.3])
    tracking = SuiteTracking(uri, second, "resolab run second.yaml")
    done, copied, run_ids = tracking.prepare(second.jobs)
    assert done == [] and [j.hash for j in copied] == [first.jobs[0].hash]
    assert set(run_ids) == {second.jobs[1].name, second.jobs[2].name}  # the failed config trains again

    (copy,) = [r for r in tracking.job_runs() if r.data.tags.get(REUSED_FROM_TAG)]
    source = client.get_run(finished)
    assert copy.data.tags[REUSED_FROM_TAG] == finished and copy.info.status == "FINISHED"
    assert copy.data.tags["resolab.suite"] == "second" and copy.data.tags["mlflow.parentRunId"] == tracking.parent_id
    assert copy.data.tags["resolab.code_version"] == "abc123"  # the code that trained it, not today's
    assert copy.data.params == source.data.params and copy.data.metrics == source.data.metrics
    assert [m.value for m in client.get_metric_history(copy.info.run_id, "loss/total")] == [2.5, 1.25]
    assert (copy.info.start_time, copy.info.end_time) == (source.info.start_time, source.info.end_time)
    assert {f.path for f in client.list_artifacts(copy.info.run_id, "matrix")} == \
        {f.path for f in client.list_artifacts(finished, "matrix")}
    pd.testing.assert_frame_equal(read_matrix(client, copy.info.run_id).frame, read_matrix(client, finished).frame)

    # The next invocation of the second suite sees the copy as its own finished job.
    again = SuiteTracking(uri, second, "resolab run second.yaml")
    done, copied, _ = again.prepare(second.jobs)
    assert [j.hash for j in done] == [first.jobs[0].hash] and copied == []


def test_no_reuse_trains_everything_and_an_unfinished_run_is_superseded_by_the_copy(uri, tmp_path):
    client = MlflowClient(uri)
    first = suite_file(tmp_path, "first", [0.1])
    first_id = SuiteTracking(uri, first, "cmd").experiment_id
    record_job(client, first_id, "first", first.jobs[0], "FINISHED")
    second = suite_file(tmp_path, "second", [0.1])

    tracking = SuiteTracking(uri, second, "cmd")
    done, copied, run_ids = tracking.prepare(second.jobs, reuse=False)
    assert done == [] and copied == [] and list(run_ids) == [second.jobs[0].name]
    interrupted = run_ids[second.jobs[0].name]  # its driver dies before the job finishes

    done, copied, run_ids = SuiteTracking(uri, second, "cmd").prepare(second.jobs)
    assert [j.name for j in copied] == [second.jobs[0].name] and run_ids == {}
    assert client.get_run(interrupted).info.status == "KILLED"
