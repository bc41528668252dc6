"""analysis.report: a job's matrix into MLflow (metrics + artifacts) and back, on SQLite and through a real server."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.matrix import ADAPTIVE_ROW, COLUMNS, Matrix
from analysis.report import log_matrix, log_matrix_metrics, metric_name, parse_metric_name, read_matrix

SAN_CELLS = [
    # mode, row, test_res, top1, top5
    ("fixed", 32, 40, 61.25, 81.5), ("fixed", 32, 32, 70.0, 90.0), ("fixed", 32, 24, 55.5, 77.0),
    ("fixed", 24, 40, 50.0, 70.0), ("fixed", 24, 32, 60.0, 80.0), ("fixed", 24, 24, 65.75, 85.0),
    ("proxy", ADAPTIVE_ROW, 40, 61.25, 81.5), ("proxy", ADAPTIVE_ROW, 32, 70.0, 90.0),
    ("proxy", ADAPTIVE_ROW, 24, 65.75, 85.0),
    ("ideal", 32, 40, 58.0, 79.0), ("ideal", 24, 40, 45.0, 66.0),
    ("ideal_calib", 32, 40, 60.5, 80.5), ("ideal_calib", 24, 40, 49.0, 69.0),
]
EXPECTED_METRICS = {
    "acc1/train32_test40": 61.25, "acc5/train32_test40": 81.5, "acc1/train32_test32": 70.0,
    "acc1/train24_test24": 65.75, "acc5/train24_test24": 85.0,
    "acc1/proxy/test40": 61.25, "acc5/proxy/test24": 85.0,
    "acc1/ideal/train32_test40": 58.0, "acc5/ideal/train24_test40": 66.0,
    "acc1/ideal_calib/train24_test40": 49.0, "acc5/ideal_calib/train32_test40": 80.5,
    "madds/test40": 3_000_000.0, "madds/test24": 1_100_000.0,
}
MADDS = {40: 3_000_000, 32: 2_000_000, 24: 1_100_000}


def san_matrix() -> Matrix:
    return Matrix(pd.DataFrame.from_records(SAN_CELLS, columns=COLUMNS))


def sorted_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["mode", "row", "test_res"]).reset_index(drop=True)


@pytest.fixture
def client_and_run(empty_db, tmp_path):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("report_test", artifact_location=(tmp_path / "artifacts").as_uri())
    return client, client.create_run(experiment_id, run_name="job").info.run_id


def test_metric_names_follow_the_layout():
    assert metric_name("fixed", 224, 160) == "acc1/train224_test160"
    assert metric_name("fixed", 224, 160, "top5") == "acc5/train224_test160"
    assert metric_name("ideal_calib", 192, 208) == "acc1/ideal_calib/train192_test208"
    assert metric_name("interp", ADAPTIVE_ROW, 176, "top5") == "acc5/interp/test176"
    for mode, row, test, *_ in SAN_CELLS:
        for metric in ("top1", "top5"):
            assert parse_metric_name(metric_name(mode, row, test, metric)) == (mode, row, test, metric)
    for epoch_metric in ("acc1/r224", "loss/cls", "lr", "acc1/test32", "acc1/fixed/train32_test32", "madds/test32"):
        assert parse_metric_name(epoch_metric) is None


def test_log_matrix_metrics_artifacts_and_round_trip(client_and_run):
    client, run_id = client_and_run
    log_matrix(client, run_id, san_matrix(), madds=MADDS, title="san-tiny")
    metrics = client.get_run(run_id).data.metrics
    assert len(metrics) == 2 * len(SAN_CELLS) + len(MADDS)
    for name, value in EXPECTED_METRICS.items():
        assert metrics[name] == value, name
    assert [m.step for m in client.get_metric_history(run_id, "acc1/train32_test32")] == [0]
    listed = {f.path for f in client.list_artifacts(run_id, "matrix")}
    assert listed == {"matrix/matrix.parquet", "matrix/matrix.csv", "matrix/heatmap.png",
                      "matrix/acc_vs_test_res.png", "matrix/acc_vs_madds.png"}
    back = read_matrix(client, run_id)
    pd.testing.assert_frame_equal(sorted_frame(back.frame), sorted_frame(san_matrix().frame), check_dtype=False)
    assert list(back.frame.columns) == COLUMNS
    assert back.table("fixed").loc[24, 24] == 65.75


def test_log_matrix_without_madds_skips_that_plot(client_and_run):
    client, run_id = client_and_run
    individual = Matrix(pd.DataFrame.from_records([("fixed", 32, t, 50.0 + t / 4, 70.0) for t in (40, 32, 24)],
                                                  columns=COLUMNS))
    log_matrix(client, run_id, individual)
    listed = {f.path for f in client.list_artifacts(run_id, "matrix")}
    assert "matrix/acc_vs_madds.png" not in listed and "matrix/heatmap.png" in listed
    assert not any(name.startswith("madds/") for name in client.get_run(run_id).data.metrics)


def test_more_than_one_batch_of_metrics(client_and_run):
    client, run_id = client_and_run
    rows = tests = range(8, 8 + 25 * 4, 4)  # 25 x 25 cells x 2 modes x top1/top5 = 2500 metrics, 3 batches
    records = [(mode, r, t, float(r + t) / 10, float(r * t) / 100) for mode in ("fixed", "ideal") for r in rows for t in tests]
    log_matrix_metrics(client, run_id, Matrix(pd.DataFrame.from_records(records, columns=COLUMNS)))
    metrics = client.get_run(run_id).data.metrics
    assert len(metrics) == 2500
    assert metrics["acc5/ideal/train96_test12"] == 96 * 12 / 100


# --------------------------------------------------------------------------------------------
# Through a real MLflow server


@pytest.mark.slow
def test_log_and_read_back_through_a_server(mlflow_server):
    url, served = mlflow_server
    client = MlflowClient(url)
    experiment_id = client.create_experiment("server_suite")
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
    run_id = client.create_run(experiment_id, run_name="job", tags={"resolab.kind": "job"}).info.run_id
    log_matrix(client, run_id, san_matrix(), madds=MADDS, title="through the server")
    client.set_terminated(run_id)

    reader = MlflowClient(url)  # a second client: nothing cached from the writer
    metrics = reader.get_run(run_id).data.metrics
    for name, value in EXPECTED_METRICS.items():
        assert metrics[name] == value, name
    back = read_matrix(reader, run_id)
    pd.testing.assert_frame_equal(sorted_frame(back.frame), sorted_frame(san_matrix().frame), check_dtype=False)
    # the bytes really went through the server into its artifacts destination
    assert list((Path(served) / experiment_id).rglob("matrix.parquet"))
    found = reader.search_runs([experiment_id], "tags.`resolab.kind` = 'job'")
    assert [r.info.run_id for r in found] == [run_id]
