"""A job's result leaves the worker as a folder of files (orchestrator.engine.results) and reaches MLflow
exactly as the in-memory matrix would; a finished checkpoint is evaluated without training."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis.report import log_matrix
from orchestrator.cluster.mlflow_sink import MlflowSink
from orchestrator.engine.checkpoint import CheckpointMismatch
from orchestrator.engine.gap_features import COLUMNS as GAP_COLUMNS, LEVELS
from orchestrator.engine.job import evaluate, run_job
from orchestrator.engine.loop import LocalRuntime
from orchestrator.engine.results import RESULT_FILE, read_result, write_result
from tests.test_predictions import san_matrix_on_random_images


def gap_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    records = [(r, pre, float(q), float(v)) for r in (32, 24) for pre in ("train", "test")
               for q, v in zip(LEVELS, np.sort(rng.normal(size=len(LEVELS))))]
    return pd.DataFrame.from_records(records, columns=GAP_COLUMNS)


@pytest.fixture
def client(empty_db, tmp_path):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def artifact_bytes(client, run_id, tmp_path, name) -> dict[str, bytes]:
    folder = client.download_artifacts(run_id, "matrix", str(tmp_path / name))
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir())}


def test_a_result_folder_is_recorded_as_the_matrix_it_holds(tiny_job, client, tmp_path):
    matrix, *_ = san_matrix_on_random_images(tiny_job)
    matrix.gap_cdf = gap_frame()
    madds = {40: 123456, 32: 65432, 28: 5000, 16: 1234}
    folder = write_result(tmp_path / "jobs" / "san-abc", matrix, madds, num_classes=10, start_epoch=2, eval_time_s=1.5,
                          title="san")

    outcome = read_result(folder)
    pd.testing.assert_frame_equal(outcome.matrix.frame, matrix.frame)
    pd.testing.assert_frame_equal(outcome.matrix.gap_cdf, matrix.gap_cdf)
    pd.testing.assert_frame_equal(pd.read_parquet(outcome.predictions), matrix.predictions)
    assert (outcome.madds, outcome.num_classes, outcome.start_epoch, outcome.eval_time_s) == (madds, 10, 2, 1.5)

    # The driver's record of the folder equals a record of the matrix itself: metrics and artifact bytes.
    experiment = client.create_experiment("results", artifact_location=(tmp_path / "artifacts").as_uri())
    direct = client.create_run(experiment, run_name="direct").info.run_id
    log_matrix(client, direct, matrix, madds=madds, title="san", gap_cdf=matrix.gap_cdf)
    logged = client.create_run(experiment, run_name="san").info.run_id
    sink = MlflowSink(client, {"san": logged}, parent_id=logged)
    sink.on_trial_result(0, [], SimpleNamespace(config={"job": "san"}), {"done": True, "result_dir": str(folder)})
    run = client.get_run(logged)
    assert run.info.status == "FINISHED" and sink.finished == {"san"} and sink.busy_seconds == 1.5
    assert run.data.metrics == {**client.get_run(direct).data.metrics, "num_classes": 10.0, "resumed_at_epoch": 2.0}
    ours, theirs = (artifact_bytes(client, r, tmp_path, r) for r in (logged, direct))
    assert ours.keys() == theirs.keys() >= {"matrix.parquet", "matrix.csv", "predictions.parquet", "gap_cdf.parquet"}
    for name in ("matrix.parquet", "matrix.csv", "predictions.parquet", "gap_cdf.parquet"):
        assert ours[name] == theirs[name], name
    # the figures are the ones the worker drew into the folder, not drawn again by the driver
    assert [p.name for p in outcome.figures] == ["heatmap.png", "acc_vs_test_res.png", "acc_vs_madds.png"]
    assert all(ours[p.name] == p.read_bytes() for p in outcome.figures)


def test_a_later_result_without_optional_files_leaves_none_behind(tiny_job, tmp_path):
    matrix, *_ = san_matrix_on_random_images(tiny_job)
    matrix.gap_cdf = gap_frame()
    folder = write_result(tmp_path, matrix, {}, num_classes=10, start_epoch=0, eval_time_s=0.0)
    matrix.predictions, matrix.gap_cdf = None, None
    write_result(folder, matrix, {}, num_classes=10, start_epoch=0, eval_time_s=0.0)
    outcome = read_result(folder)
    assert outcome.predictions is None and outcome.matrix.gap_cdf is None
    assert sorted(p.name for p in folder.iterdir()) == ["acc_vs_test_res.png", "heatmap.png", "matrix.parquet",
                                                        RESULT_FILE]


def test_evaluating_a_final_checkpoint_gives_the_numbers_of_the_job_that_trained_it(tiny_job, tmp_path):
    cfg = tiny_job(**{"train.epochs": 2, "eval.gap_cdf": True})
    trained = run_job(cfg, LocalRuntime(tmp_path, device="cpu", log=lambda _: None), "hash")
    weights = {k: v.clone() for k, v in trained.trained.net.state_dict().items()}

    evaluated = evaluate(tmp_path / "checkpoint", cfg, device="cpu")
    pd.testing.assert_frame_equal(evaluated.matrix.frame, trained.matrix.frame, check_exact=True)
    pd.testing.assert_frame_equal(evaluated.matrix.predictions, trained.matrix.predictions)
    pd.testing.assert_frame_equal(evaluated.matrix.gap_cdf, trained.matrix.gap_cdf, check_exact=True)
    assert evaluated.trained.start_epoch == 2 and evaluated.trained.history == trained.trained.history
    # Nothing trained or written: the checkpoint is read, not resumed.
    assert all(torch.equal(v, weights[k]) for k, v in evaluated.trained.net.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["checkpoint.pt"]

    # Another job of the same model (other eval settings) evaluates it; another model is refused.
    other_eval = tiny_job(**{"train.epochs": 2, "eval.test_resolutions": [36, 20]})
    assert sorted(evaluate(tmp_path / "checkpoint", other_eval, device="cpu").matrix.frame.test_res.unique()) == [20, 36]
    with pytest.raises(CheckpointMismatch, match="trains another model"):
        evaluate(tmp_path / "checkpoint", tiny_job(**{"train.epochs": 2, "train.lr": 0.02}), device="cpu")
