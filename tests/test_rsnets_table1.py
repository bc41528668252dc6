"""RS-Nets Table 1 (analysis.tables.rsnets_table1) against hand counts on six images, through the pure builder
and through make_tables reading the predictions artifacts from a real SQLite MLflow store."""
from __future__ import annotations

import os
import shutil

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from analysis.matrix import COLUMNS, Matrix
from records.batch import log_batched
from analysis.predictions import PREDICTIONS_NAME, predictions_frame, top1_of, write_predictions
from analysis.report import log_matrix_metrics
from analysis.tables.rsnets_table1 import WORSE_LEGEND, rsnets_table1
from jobspec import DataConfig, EvalConfig, JobConfig, MethodConfig, ModelConfig, TrainConfig, config_hash, flatten, param_value
from tests.table_cells import Cells, by_column, table_cells

RES = (32, 24, 16)
LABELS = [0, 1, 2, 3, 4, 5]

# Which of the six images (index = label) each run gets right, per (row, test) cell.
RIGHT = {
    "inet32": {(32, 32): {0, 1, 2, 3}, (32, 24): {0, 1}, (32, 16): {0}},
    "inet24": {(24, 24): {0, 1, 4}, (24, 32): {0, 1}, (24, 16): {0}},
    "inet16": {(16, 16): {0, 5}, (16, 32): {0}, (16, 24): {0}},
    "parallel": {(32, 32): {0, 1, 2, 3, 4}, (24, 24): {0, 1, 2, 4}, (16, 16): {0}},
    "rsnet_s0": {(32, 32): {0, 1, 2, 3, 4, 5}, (24, 24): {0, 1, 2, 3, 4}, (16, 16): {0, 1, 2}},
    "rsnet_s1": {(32, 32): {0, 1, 2, 3, 4}, (24, 24): {0, 1, 2, 3, 4}, (16, 16): {0, 1, 2, 3}},
}


def job(method: str, resolutions, seed: int = 0) -> JobConfig:
    return JobConfig(model=ModelConfig(backbone="resnet_tiny", small_input=True), method=MethodConfig(name=method),
                     data=DataConfig(resolutions=list(resolutions), num_classes=10),
                     train=TrainConfig(epochs=2, seed=seed), eval=EvalConfig(test_resolutions=list(RES))).validate()


RUNS = {"inet32": job("individual", [32]), "inet24": job("individual", [24]), "inet16": job("individual", [16]),
        "parallel": job("parallel", RES), "rsnet_s0": job("rsnet", RES, 0), "rsnet_s1": job("rsnet", RES, 1)}


def predictions_of(name: str) -> pd.DataFrame:
    """Wrong = the next class; RS-Net seed 1 lists its images in reverse order (runs line up by image index)."""
    cells = RIGHT[name]
    labels = np.array(LABELS)
    frame = predictions_frame(labels, {("fixed", r, t): np.where(np.isin(labels, list(right)), labels, (labels + 1) % 10)
                                       for (r, t), right in cells.items()})
    return frame.iloc[::-1].reset_index(drop=True) if name == "rsnet_s1" else frame


def matrix_of(name: str) -> Matrix:
    """Cell metrics that agree with the predictions (top-1 over the same images)."""
    top1 = top1_of(predictions_of(name))
    return Matrix(pd.DataFrame.from_records([(m, r, t, v, v) for (m, r, t), v in top1.items()], columns=COLUMNS))


def runs_frame(names=tuple(RUNS)) -> pd.DataFrame:
    """The frame make_tables fetches: one FINISHED job run per fixture run, metrics from matrix_of."""
    records = []
    for i, name in enumerate(names):
        cfg = RUNS[name]
        record = {"run_id": name, "status": "FINISHED", "start_time": 1000 + i, "tags.resolab.kind": "job",
                  "tags.resolab.config_hash": config_hash(cfg)}
        record.update({f"params.{k}": param_value(v) for k, v in flatten(cfg).items()})
        for mode, row, test, top1, top5 in matrix_of(name).frame.itertuples(index=False):
            record[f"metrics.acc1/train{row}_test{test}"] = top1
            record[f"metrics.acc5/train{row}_test{test}"] = top5
        records.append(record)
    return pd.DataFrame.from_records(records)


def log_fixture(client: MlflowClient, suite: str, tmp_path, with_predictions=tuple(RUNS)) -> None:
    """The fixture runs as the orchestrator records them, predictions artifact included."""
    experiment_id = client.create_experiment(suite, artifact_location=(tmp_path / "artifacts").as_uri())
    for name, cfg in RUNS.items():
        run_id = client.create_run(experiment_id, run_name=name, tags={
            "resolab.kind": "job", "resolab.config_hash": config_hash(cfg)}).info.run_id
        log_batched(client, run_id, params=[Param(k, param_value(v)) for k, v in flatten(cfg).items()])
        log_matrix_metrics(client, run_id, matrix_of(name))
        if name in with_predictions:
            path = write_predictions(predictions_of(name), tmp_path / name / PREDICTIONS_NAME)
            client.log_artifact(run_id, str(path), artifact_path="matrix")
        client.set_terminated(run_id)


@pytest.fixture
def store(empty_db, tmp_path) -> str:
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# Hand counts: cell (row x, column c) = |right at c, wrong at x| / 6 images; "-" on the diagonal.
SHARE_COLUMNS = ["32", "24", "16"]  # columns: right at; rows: wrong at


def grid(rows: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    return {label: by_column(SHARE_COLUMNS, *texts) for label, texts in rows.items()}


INETS = grid({"32": ["-", "16.7", "16.7"],  # right at 24 only: image 4; at 16 only: image 5
              "24": ["33.3", "-", "16.7"],  # right at 32, not 24: 2, 3; right at 16, not 24: 5
              "16": ["50.0", "33.3", "-"]})  # right at 32, not 16: 1, 2, 3; right at 24, not 16: 1, 4
PARALLEL = grid({"32": ["-", "0.0", "0.0"], "24": ["16.7", "-", "0.0"],  # image 3
                 "16": ["66.7", "50.0", "-"]})  # 1, 2, 3, 4 and 1, 2, 4 ...
PARALLEL_WORSE = {("16", "32"), ("16", "24")}  # ... above the I-Nets' 50.0 and 33.3: marked
# seed 0: (24, 32) image 5, (16, 32) 3, 4, 5, (16, 24) 3, 4; seed 1: (16, 32) 4, (16, 24) 4
RSNET = grid({"32": ["-", "0.0 ± 0.0", "0.0 ± 0.0"], "24": ["8.3 ± 11.8", "-", "0.0 ± 0.0"],
              "16": ["33.3 ± 23.6", "25.0 ± 11.8", "-"]})
PANELS = {"Individual training (base)": INETS, "Parallel training": PARALLEL, "Parallel training + MRED": RSNET}


def assert_hand_counts(table: Cells) -> None:
    for title, expected in PANELS.items():
        panel = table.panel(f"resnet_tiny — {title}")
        assert panel.columns == SHARE_COLUMNS, title
        assert panel.grid == expected, title
        assert panel.marked == (PARALLEL_WORSE if expected is PARALLEL else set()), title


def test_shares_match_a_hand_count():
    loads = {name: predictions_of(name) for name in RUNS}
    table = Cells.of(rsnets_table1(runs_frame(), ["resolab run experiments/rsnets_table2.yaml"], predictions=loads.get))
    assert [panel.corner for panel in table.panels] == ["wrong \\ right"] * 3
    assert_hand_counts(table)
    assert table.legend == [WORSE_LEGEND] and "over up to 2 seeds" in table.notes[0]
    assert table.missing == []


def test_runs_without_predictions_leave_their_block_missing():
    loads = {name: predictions_of(name) for name in RUNS if name != "parallel"}
    table = Cells.of(rsnets_table1(runs_frame(), ["resolab run experiments/rsnets_table2.yaml"], predictions=loads.get))
    assert table.panel("resnet_tiny — Parallel training").grid == grid(
        {"32": ["-", "—", "—"], "24": ["—", "-", "—"], "16": ["—", "—", "-"]})
    assert table.panel("resnet_tiny — Individual training (base)").grid == INETS
    assert [line for line in table.missing
            if line.startswith("missing: per-image predictions (matrix/predictions.parquet) of Parallel resnet_tiny")]
    table = Cells.of(rsnets_table1(runs_frame(("inet32", "inet24", "inet16", "rsnet_s0", "rsnet_s1")), predictions=loads.get))
    assert [line for line in table.missing if line.startswith("missing: Parallel resnet_tiny")]


def test_make_tables_reads_the_artifacts(capsys, store, tmp_path):
    log_fixture(MlflowClient(store), "rsnets_table2", tmp_path)
    assert_hand_counts(table_cells(capsys, store, "rsnets_table1"))
