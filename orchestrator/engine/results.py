"""A finished job's result, as files in the job's folder: what the worker writes and the driver logs.

- ``matrix.parquet``: the accuracy matrix (long form);
- ``predictions.parquet``: the per-image top-1 of every cell, when evaluated;
- ``gap_cdf.parquet``: the GAP activation quantiles, with ``eval.gap_cdf``;
- the matrix's figures (``analysis.report.FIGURE_FILES``), drawn here rather than by the suite driver;
- ``result.json``: MAdds per test resolution, the number of classes, the epoch the invocation began
  at and the evaluation time; written last, so a folder with it holds a whole result.

The worker writes them into a local folder and ``publish_result`` copies them to the job's folder on
storage (``records.storage``: a shared path or an object store), the one that holds its checkpoints, so
only that location travels in the trial's report: the driver reads it back with ``fetched_result`` and
stays the only MLflow writer, without the matrix and predictions passing through Ray.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.matrix import Matrix
from analysis.predictions import write_predictions
from analysis.report import FIGURE_FILES, write_matrix_figures
from records import storage
from records.files import atomic_write
from records.names import GAP_CDF_PARQUET, MATRIX_PARQUET, PREDICTIONS_PARQUET

RESULT_FILE = "result.json"


@dataclass
class JobOutcome:
    """A result folder, read back: everything the driver records for a finished job."""
    matrix: Matrix  # with gap_cdf when the job computed it; predictions stay on disk
    predictions: Path | None  # the per-image predictions file, None when the job wrote none
    figures: list[Path] | None  # the figure files; None for a result written before they were drawn here
    madds: dict[int, int]
    num_classes: int
    start_epoch: int
    eval_time_s: float


def _parquet(frame: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_result(folder: Path, matrix: Matrix, madds: dict[int, int], num_classes: int, start_epoch: int,
                 eval_time_s: float, title: str = "") -> Path:
    """Write the result files into ``folder`` (each atomically, ``result.json`` last; ``title`` heads the
    figures); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    optional = {PREDICTIONS_PARQUET: matrix.predictions, GAP_CDF_PARQUET: matrix.gap_cdf}
    (folder / RESULT_FILE).unlink(missing_ok=True)  # the folder holds no whole result until this one is
    _parquet(matrix.frame, folder / MATRIX_PARQUET)
    for name, frame in optional.items():
        if frame is None:  # a file left by an earlier result of this job is not this result's
            (folder / name).unlink(missing_ok=True)
        elif name == PREDICTIONS_PARQUET:
            write_predictions(frame, folder / name)
        else:
            _parquet(frame, folder / name)
    for name in FIGURE_FILES:
        (folder / name).unlink(missing_ok=True)
    figures = [path.name for path in write_matrix_figures(matrix, folder, madds, title)]
    summary = {"madds": {str(t): m for t, m in madds.items()}, "num_classes": int(num_classes),
               "start_epoch": int(start_epoch), "eval_time_s": float(eval_time_s), "figures": figures,
               "files": [MATRIX_PARQUET, *(name for name, frame in optional.items() if frame is not None), *figures]}
    atomic_write(folder / RESULT_FILE, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)))
    return folder


def read_result(folder: Path) -> JobOutcome:
    """The result that ``write_result`` left in ``folder`` (FileNotFoundError: none, or not whole)."""
    folder = Path(folder)
    summary = json.loads((folder / RESULT_FILE).read_text())
    files = set(summary["files"])
    gap_cdf = pd.read_parquet(folder / GAP_CDF_PARQUET) if GAP_CDF_PARQUET in files else None
    return JobOutcome(
        matrix=Matrix(pd.read_parquet(folder / MATRIX_PARQUET), gap_cdf=gap_cdf),
        predictions=folder / PREDICTIONS_PARQUET if PREDICTIONS_PARQUET in files else None,
        figures=[folder / name for name in summary["figures"]] if "figures" in summary else None,
        madds={int(t): m for t, m in summary["madds"].items()}, num_classes=int(summary["num_classes"]),
        start_epoch=int(summary["start_epoch"]), eval_time_s=float(summary["eval_time_s"]))


def publish_result(folder: Path, location: str) -> str:
    """Copy the result in ``folder`` to the job's folder ``location`` on storage, ``result.json`` last (and
    the one there before first away), so a reader finds a whole result or none; returns ``location``."""
    files = json.loads((Path(folder) / RESULT_FILE).read_text())["files"]
    if storage.resolve(str(folder)) != storage.resolve(location):
        storage.delete(storage.join(location, RESULT_FILE))
        storage.publish(Path(folder), location, [*files, RESULT_FILE])
    return location


@contextlib.contextmanager
def fetched_result(location: str) -> Iterator[JobOutcome]:
    """The result at ``location`` (a folder or an object-store URI), readable inside the block: the
    predictions file it names is a local file until the block ends."""
    with storage.local_folder(location, [RESULT_FILE, MATRIX_PARQUET, PREDICTIONS_PARQUET, GAP_CDF_PARQUET,
                                         *FIGURE_FILES]) as folder:
        if folder is None:
            raise FileNotFoundError(f"no whole result at {location} ({RESULT_FILE} is missing)")
        yield read_result(folder)
