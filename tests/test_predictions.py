"""Per-image predictions: kept by the matrix's single pass, equal to its top-1 cell by cell, and carried
to MLflow (analysis.report), from a Ray worker to the driver (ray_job / mlflow_sink) and by `resolab train`."""
from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from analysis.matrix import ADAPTIVE_ROW, Matrix, evaluate_matrix
from analysis.predictions import (IMAGE, LABEL, PREDICTIONS_NAME, cell_correct, cells_of, column_name, load_predictions,
                                  mean_correct, paired, parse_column, predictions_frame, top1_of, write_predictions)
from analysis.report import log_matrix, read_predictions
from methods import build_method
from records import storage as files
from tests.test_switchable import randomize_net

TESTS = [40, 32, 28, 16]


def san_matrix_on_random_images(tiny_job, batches=3, batch=7):
    """A randomly initialised SAN (every mode: fixed, proxy, ideal, ideal_calib) through evaluate_matrix."""
    torch.manual_seed(0)
    cfg = tiny_job(**{"method.name": "san"})
    method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
    net = method.build(num_classes=10)
    randomize_net(net, seed=3)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a sharper classifier: more distinct classes per cell
        net.backbone.fc.weight.copy_(torch.randn(net.backbone.fc.weight.shape, generator=g) * 10)

    def images(t):  # widely scaled: the image, not the random BN shifts, then decides the class
        return torch.randn(batch, 3, t, t, generator=g) * 10 ** (3 * torch.rand(batch, 1, 1, 1, generator=g))
    loader = [(tuple(images(t) for t in TESTS), torch.randint(0, 10, (batch,), generator=g)) for _ in range(batches)]
    calibration = {t: [torch.randn(4, 3, t, t, generator=g)] for t in TESTS}
    matrix = evaluate_matrix(net, method.eval_modes(calibrate=True), loader, TESTS, torch.device("cpu"),
                             calibration_batches=lambda t: calibration[t])
    return matrix, loader, net, method


def test_predictions_reproduce_every_cells_top1_exactly(tiny_job):
    matrix, loader, net, method = san_matrix_on_random_images(tiny_job)
    frame = matrix.predictions
    assert len(frame) == 21 and frame[IMAGE].tolist() == list(range(21))
    assert frame[LABEL].tolist() == torch.cat([labels for _, labels in loader]).tolist()
    assert all(frame[c].dtype == np.int16 for c in frame.columns if c != IMAGE)
    from_images = top1_of(frame)
    cells = {(m, int(r), int(t)): top1 for m, r, t, top1 in matrix.frame[["mode", "row", "test_res", "top1"]].itertuples(index=False)}
    assert set(from_images) == set(cells) and len(cells) == len(frame.columns) - 2
    for cell, top1 in cells.items():
        assert from_images[cell] == top1, cell  # same hits, same division: exactly equal
    assert {m for m, _, _ in cells} == {"fixed", "proxy", "ideal", "ideal_calib"}
    assert len(set(cells.values())) > 1  # the cells are not all alike

    # image by image, the classes of the routes themselves (calibrated cells aside: they need a rebuilt net)
    training = list(net.resolutions)
    for mode in method.eval_modes(calibrate=False):
        for T in TESTS:
            for row in (training if mode.per_row else [ADAPTIVE_ROW]):
                slot = training.index(row) if mode.per_row else None
                with torch.no_grad():
                    direct = torch.cat([net(xs[TESTS.index(T)], resolution=T, bn=mode.bn, eps=mode.eps, slot=slot)
                                        .topk(1, dim=1).indices[:, 0] for xs, _ in loader])
                assert frame[column_name(mode.name, row, T)].tolist() == direct.tolist(), (mode.name, row, T)


def test_column_names_parse_back():
    for cell in [("fixed", 224, 160), ("ideal_calib", 192, 208), ("proxy", ADAPTIVE_ROW, 176), ("interp", 0, 64)]:
        assert parse_column(column_name(*cell)) == cell
    assert column_name("proxy", ADAPTIVE_ROW, 176) == "proxy/test176"
    assert parse_column(IMAGE) is None and parse_column(LABEL) is None


def test_class_ids_past_int16_widen():
    frame = predictions_frame(np.array([40000, 3]), {("fixed", 32, 32): np.array([40000, 2])})
    assert frame[LABEL].dtype == np.int32 and top1_of(frame) == {("fixed", 32, 32): 50.0}


def test_correctness_pairs_by_image_and_only_on_the_same_images():
    cell = ("fixed", 32, 32)
    a = predictions_frame(np.array([1, 2, 3]), {cell: np.array([1, 0, 3])})
    b = a.iloc[::-1].copy()  # the same images, listed the other way round
    b["fixed/train32_test32"] = np.array([3, 2, 0], dtype=np.int16)
    right_a, right_b = paired(cell_correct(a, cell), cell_correct(b, cell))
    assert right_a.tolist() == [1.0, 0.0, 1.0] and right_b.tolist() == [0.0, 1.0, 1.0]
    assert mean_correct([cell_correct(a, cell), cell_correct(b, cell)])["correct"].tolist() == [0.5, 0.5, 1.0]
    fewer = a.iloc[1:]
    assert paired(cell_correct(a, cell), cell_correct(fewer, cell)) is None
    other = a.copy()
    other[LABEL] = np.array([1, 9, 3], dtype=np.int16)
    assert paired(cell_correct(a, cell), cell_correct(other, cell)) is None
    assert cell_correct(a, ("fixed", 24, 24)) is None and cell_correct(None, cell) is None


# ---------------------------------------------------------------- MLflow


@pytest.fixture
def client_and_run(empty_db, tmp_path):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("predictions", artifact_location=(tmp_path / "artifacts").as_uri())
    return client, client.create_run(experiment_id, run_name="job").info.run_id


def test_artifact_round_trips_through_a_sqlite_store(tiny_job, client_and_run):
    client, run_id = client_and_run
    assert read_predictions(client, run_id) is None  # nothing logged yet
    matrix, *_ = san_matrix_on_random_images(tiny_job)
    log_matrix(client, run_id, matrix)
    assert f"matrix/{PREDICTIONS_NAME}" in {f.path for f in client.list_artifacts(run_id, "matrix")}
    back = read_predictions(MlflowClient(client.tracking_uri), run_id)
    pd.testing.assert_frame_equal(back, matrix.predictions)  # dtypes too: int32 image, int16 classes
    metrics = client.get_run(run_id).data.metrics
    for (mode, row, test), top1 in top1_of(back).items():
        name = f"acc1/train{row}_test{test}" if mode == "fixed" else (
            f"acc1/{mode}/test{test}" if row == ADAPTIVE_ROW else f"acc1/{mode}/train{row}_test{test}")
        assert metrics[name] == pytest.approx(top1, abs=1e-9), name


def test_a_file_written_elsewhere_is_logged_and_a_missing_one_skipped(tmp_path, client_and_run, caplog):
    client, run_id = client_and_run
    frame = predictions_frame(np.array([0, 1, 1]), {("fixed", 32, 32): np.array([0, 1, 0])})
    matrix = Matrix(pd.DataFrame({"mode": ["fixed"], "row": [32], "test_res": [32], "top1": [200 / 3], "top5": [100.0]}))
    path = write_predictions(frame, tmp_path / "job" / PREDICTIONS_NAME)
    log_matrix(client, run_id, matrix, predictions=str(path))
    pd.testing.assert_frame_equal(read_predictions(client, run_id), frame)
    other = client.create_run(client.get_run(run_id).info.experiment_id).info.run_id
    log_matrix(client, other, matrix, predictions=tmp_path / "nowhere" / PREDICTIONS_NAME)
    assert read_predictions(client, other) is None and "not found" in caplog.text
    assert "matrix/matrix.parquet" in {f.path for f in client.list_artifacts(other, "matrix")}


# ---------------------------------------------------------------- worker -> driver, and resolab train


@pytest.mark.parametrize("storage", ["folder", "s3"])
def test_worker_writes_predictions_beside_its_checkpoints_and_the_driver_logs_them(tiny_job, tmp_path, client_and_run,
                                                                                  storage, request):
    """On a folder the worker writes its result in place; on an object store it writes a local copy,
    uploads it beside the checkpoints and the driver reads it back from there."""
    from orchestrator.engine.job import JobResult
    from orchestrator.engine.loop import TrainedJob
    from orchestrator.cluster.mlflow_sink import MlflowSink
    from orchestrator.cluster.ray_job import _final_report

    cfg = tiny_job(**{"method.name": "san"})
    matrix, *_ = san_matrix_on_random_images(tiny_job)
    method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
    result = JobResult(TrainedJob(method.build(num_classes=10), method, 10), matrix)
    reports = []
    root = str(tmp_path) if storage == "folder" else request.getfixturevalue("s3_bucket")
    folder = files.join(root, "jobs", "san-abc")
    _final_report(cfg, result, reports.append, folder, tmp_path / "scratch", "san")
    (report,) = reports
    assert report == {"done": True, "result_dir": folder}  # only the folder travels
    with files.local_folder(folder, [PREDICTIONS_NAME]) as local:
        pd.testing.assert_frame_equal(load_predictions(local / PREDICTIONS_NAME), matrix.predictions)

    client, run_id = client_and_run
    sink = MlflowSink(client, {"san": run_id}, parent_id=run_id)
    sink.on_trial_result(0, [], SimpleNamespace(config={"job": "san"}), report)
    assert client.get_run(run_id).info.status == "FINISHED"
    pd.testing.assert_frame_equal(read_predictions(client, run_id), matrix.predictions)


def test_resolab_train_writes_predictions_next_to_the_matrix(tiny_data_root, tmp_path, capsys):
    from orchestrator.cli.main import main

    job = {"model": {"backbone": "resnet_tiny", "small_input": True, "width": 8}, "method": {"name": "rsnet"},
           "data": {"root": str(tiny_data_root), "num_classes": 10, "resolutions": [32, 16], "loader_workers": 0,
                    "synthetic": {"num_train": 40, "num_val": 20, "min_size": 32, "max_size": 40}},
           "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2},
           "eval": {"batch_size": 8, "test_resolutions": [32, 24, 16]}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"name": "tiny", "job": job}))
    assert main(["train", str(config), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    matrix = pd.read_csv(tmp_path / "out" / "matrix.csv")
    frame = load_predictions(tmp_path / "out" / PREDICTIONS_NAME)
    assert len(frame) == 20 and len(cells_of(frame)) == len(matrix)
    from_images = top1_of(frame)
    for cell in matrix.itertuples(index=False):
        assert from_images[(cell.mode, cell.row, cell.test_res)] == pytest.approx(cell.top1, abs=1e-9)
