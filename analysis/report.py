"""One job's accuracy matrix in MLflow: cell metrics, Parquet/CSV and figures; and the way back.

Metric names: ``records.names.metric_name`` (top-1 ``acc1``, top-5 ``acc5``; values in %, step 0).

Artifacts under ``matrix/``: ``matrix.parquet`` and ``matrix.csv`` (long form, ``analysis.matrix.COLUMNS``),
``heatmap.png``, ``acc_vs_test_res.png`` and, with MAdds, ``acc_vs_madds.png``; with per-image
predictions, ``predictions.parquet`` (``analysis.predictions``); with ``eval.gap_cdf``, ``gap_cdf.parquet``
(the GAP activation quantiles of RS-Nets Fig. 3 right: row, preprocessing, level, value).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric

from analysis.matrix import COLUMNS, Matrix
from analysis.predictions import PREDICTIONS_NAME, write_predictions
from records.batch import log_batched
# FIXED_MODE and parse_metric_name are imported from here by the table builders.
from records.names import (FIXED_MODE, GAP_CDF_PARQUET, MATRIX_CSV, MATRIX_DIR, MATRIX_PARQUET,  # noqa: F401
                           madds_metric_name, metric_name, parse_metric_name)

# A matrix read back (export, pick, the tables) prints no download progress bar.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def matrix_metrics(matrix: Matrix) -> dict[str, float]:
    """Metric name -> value for every cell, top-1 and top-5."""
    metrics = {}
    for cell in matrix.frame.itertuples(index=False):
        for metric in ("top1", "top5"):
            metrics[metric_name(cell.mode, int(cell.row), int(cell.test_res), metric)] = float(getattr(cell, metric))
    return metrics


def log_matrix_metrics(client, run_id: str, matrix: Matrix, madds: dict[int, int] | None = None) -> None:
    """All cell metrics (and MAdds), batched."""
    now = int(time.time() * 1000)
    values = matrix_metrics(matrix)
    values.update({madds_metric_name(res): float(m) for res, m in (madds or {}).items()})
    log_batched(client, run_id, metrics=[Metric(name, value, now, 0) for name, value in values.items()])


def proxy_row(training_resolutions, test_res: int) -> int:
    """S(T): the training resolution nearest to T, ties to the larger (as ``MultiResolutionNet.nearest_slot``)."""
    return min(training_resolutions, key=lambda r: (abs(r - test_res), -r))


def marked_cells(rows, columns) -> set[tuple[int, int]]:
    """Cells to outline in a heatmap: the diagonal, and each column's proxy row when there are several rows."""
    rows = [int(r) for r in rows]
    marked = {(r, c) for r in rows for c in columns if r == c}
    if len(rows) > 1:
        marked |= {(proxy_row(rows, c), c) for c in columns}
    return marked


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[COLUMNS].copy()
    frame["mode"] = frame["mode"].astype(str)
    frame[["row", "test_res"]] = frame[["row", "test_res"]].astype("int64")
    frame[["top1", "top5"]] = frame[["top1", "top5"]].astype("float64")
    return frame.reset_index(drop=True)


FIGURE_FILES = ("heatmap.png", "acc_vs_test_res.png", "acc_vs_madds.png")


def write_matrix_figures(matrix: Matrix, folder: Path, madds: dict[int, int] | None = None, title: str = "") -> list[Path]:
    """heatmap.png, acc_vs_test_res.png and (with MAdds) acc_vs_madds.png (``FIGURE_FILES``) into ``folder``."""
    from analysis import plots  # matplotlib only when figures are drawn

    written = []
    if FIXED_MODE in matrix.modes():
        table = matrix.table(FIXED_MODE)
        rows = [r for r in table.index if r != "adaptive"]
        fig = plots.heatmap(table, marked_cells(rows, table.columns), title=f"{title} top-1 (%), fixed".strip())
        written.append(plots.save(fig, folder / FIGURE_FILES[0]))
    curves = plots.matrix_curves(matrix.frame)
    fig = plots.accuracy_vs_test_resolution(curves, title=f"{title} top-1 vs test resolution".strip())
    written.append(plots.save(fig, folder / FIGURE_FILES[1]))
    if madds:
        fig = plots.accuracy_vs_madds(plots.matrix_curves(matrix.frame, madds={int(k): v for k, v in madds.items()}),
                                      title=f"{title} top-1 vs MAdds".strip())
        written.append(plots.save(fig, folder / FIGURE_FILES[2]))
    return written


def log_matrix(client, run_id: str, matrix: Matrix, madds: dict[int, int] | None = None, title: str = "",
               predictions: pd.DataFrame | Path | str | None = None, gap_cdf: pd.DataFrame | None = None,
               figures: list[Path] | None = None) -> None:
    """Cell metrics plus the ``matrix/`` artifacts of one finished job. ``predictions``: the per-image
    frame, or a ``predictions.parquet`` file written elsewhere (a Ray worker's job directory); by
    default ``matrix.predictions``. ``figures``: the figure files drawn already (by the worker that
    evaluated the job, so that a suite's driver does not draw a thousand jobs' figures one by one);
    None: drawn here."""
    frame = _typed(matrix.frame)
    log_matrix_metrics(client, run_id, Matrix(frame), madds)
    predictions = matrix.predictions if predictions is None else predictions
    gap_cdf = matrix.gap_cdf if gap_cdf is None else gap_cdf
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        frame.to_parquet(folder / MATRIX_PARQUET, index=False)
        frame.to_csv(folder / MATRIX_CSV, index=False)
        if figures is None:
            write_matrix_figures(Matrix(frame), folder, madds, title)
        for figure in figures or []:
            shutil.copyfile(figure, folder / Path(figure).name)
        if isinstance(predictions, pd.DataFrame):
            write_predictions(predictions, folder / PREDICTIONS_NAME)
        elif predictions is not None and Path(predictions).is_file():
            shutil.copyfile(predictions, folder / PREDICTIONS_NAME)
        elif predictions is not None:  # the matrix is still worth recording without them
            logging.getLogger(__name__).warning("per-image predictions %s not found; run %s gets none",
                                                predictions, run_id)
        if gap_cdf is not None:
            gap_cdf.to_parquet(folder / GAP_CDF_PARQUET, index=False)
        client.log_artifacts(run_id, str(folder), artifact_path=MATRIX_DIR)


def read_matrix(client, run_id: str) -> Matrix:
    """The Parquet artifact of ``log_matrix``, downloaded through the client's tracking store or server."""
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, f"{MATRIX_DIR}/{MATRIX_PARQUET}", tmp)
        return Matrix(_typed(pd.read_parquet(path)))


def read_predictions(client, run_id: str) -> pd.DataFrame | None:
    """The run's per-image predictions artifact; None for a run recorded without one."""
    return _read_optional_parquet(client, run_id, PREDICTIONS_NAME)


def read_gap_cdf(client, run_id: str) -> pd.DataFrame | None:
    """The run's GAP activation quantiles (``eval.gap_cdf``); None for a run recorded without them."""
    return _read_optional_parquet(client, run_id, GAP_CDF_PARQUET)


def _read_optional_parquet(client, run_id: str, name: str) -> pd.DataFrame | None:
    """A Parquet file under the run's ``matrix/`` artifacts, or None when the run has none of that name."""
    if f"{MATRIX_DIR}/{name}" not in {f.path for f in client.list_artifacts(run_id, MATRIX_DIR)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(client.download_artifacts(run_id, f"{MATRIX_DIR}/{name}", tmp))
