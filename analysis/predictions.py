"""Per-image top-1 predictions of a job's matrix cells: the ``matrix/predictions.parquet`` artifact.

One row per validation image, in the order the (unshuffled) validation loader yields them:

- ``image``: the image's position in the validation set (int32), the key that lines runs up;
- ``label``: its class (int16);
- one column per evaluated cell: the predicted top-1 class (int16; int32 past 32767 classes), named
  ``{mode}/train{row}_test{test}``, or ``{mode}/test{test}`` for an adaptive mode (row 0).

A cell's top-1 accuracy is the share of images whose column equals ``label``: the matrix's ``top1``
exactly, since both come from the same forward pass (``analysis.matrix``).

Readers work with "correctness" frames: index = image, columns ``label`` and ``correct`` (the share of
the runs, i.e. seeds, that got the image right: 0 or 1 for a single run).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from records.files import atomic_write
# PREDICTIONS_NAME: the writers of the artifact import it from here.
from records.names import ADAPTIVE_ROW, PREDICTIONS_PARQUET as PREDICTIONS_NAME  # noqa: F401

IMAGE, LABEL = "image", "label"
SEED_PARAM = "params.train.seed"  # a run's seed, as make_tables' run frames hold it

Cell = tuple[str, int, int]  # (mode, row, test_res)
PredictionsOf = Callable[[str], "pd.DataFrame | None"]  # run id -> its predictions frame, None if it has none

_COLUMN = re.compile(r"^(?P<mode>[A-Za-z0-9_]+)/(?:train(?P<row>\d+)_)?test(?P<test>\d+)$")


def column_name(mode: str, row: int, test_res: int) -> str:
    if row == ADAPTIVE_ROW:
        return f"{mode}/test{test_res}"
    return f"{mode}/train{row}_test{test_res}"


def parse_column(name: str) -> Cell | None:
    """(mode, row, test_res) of a cell column; None for ``image``, ``label`` or anything else."""
    match = _COLUMN.match(name)
    if not match:
        return None
    return match["mode"], int(match["row"] or ADAPTIVE_ROW), int(match["test"])


def class_dtype(largest_class: int) -> type:
    return np.int16 if largest_class < 2 ** 15 else np.int32


def predictions_frame(labels: np.ndarray, cells: dict[Cell, np.ndarray]) -> pd.DataFrame:
    """The artifact's frame from the labels and each cell's top-1 class ids (same image order)."""
    labels = np.asarray(labels)
    largest = max([int(labels.max(initial=0))] + [int(np.max(p, initial=0)) for p in cells.values()])
    dtype = class_dtype(largest)
    columns = {IMAGE: np.arange(len(labels), dtype=np.int32), LABEL: labels.astype(dtype)}
    for (mode, row, test), predicted in cells.items():
        columns[column_name(mode, row, test)] = np.asarray(predicted).astype(dtype)
    return pd.DataFrame(columns)


def write_predictions(frame: pd.DataFrame, path: Path) -> Path:
    """Atomically (a half-written file is never seen under ``path``); zstd keeps ImageNet-sized files small."""
    return atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=False, compression="zstd"))


def load_predictions(path: Path | str) -> pd.DataFrame:
    return pd.read_parquet(path)


def cells_of(frame: pd.DataFrame) -> list[Cell]:
    return [cell for cell in map(parse_column, frame.columns) if cell is not None]


def top1_of(frame: pd.DataFrame) -> dict[Cell, float]:
    """Top-1 (%) of every cell, from the per-image predictions alone (computed as the matrix computes it)."""
    labels = frame[LABEL].to_numpy()
    return {cell: 100.0 * int(np.sum(frame[column_name(*cell)].to_numpy() == labels)) / len(frame)
            for cell in cells_of(frame)}


def cell_correct(frame: pd.DataFrame | None, cell: Cell) -> pd.DataFrame | None:
    """The correctness frame of one run's cell; None when the run has no predictions or not that cell."""
    if frame is None or column_name(*cell) not in frame:
        return None
    correct = (frame[column_name(*cell)].to_numpy() == frame[LABEL].to_numpy()).astype(float)
    return pd.DataFrame({LABEL: frame[LABEL].to_numpy(), "correct": correct}, index=frame[IMAGE].to_numpy())


def _common(parts: list[pd.DataFrame]) -> list[pd.DataFrame] | None:
    """The parts in one image order; None unless they hold the same images with the same labels (runs
    evaluated on different validation images cannot be compared image by image, nor with their metrics)."""
    index = parts[0].index.sort_values()
    if len(index) == 0 or any(len(part.index) != len(index) or not part.index.sort_values().equals(index)
                              for part in parts[1:]):
        return None
    parts = [part.loc[index] for part in parts]
    if any(not np.array_equal(part[LABEL].to_numpy(), parts[0][LABEL].to_numpy()) for part in parts[1:]):
        return None
    return parts


def mean_correct(parts: Iterable[pd.DataFrame | None]) -> pd.DataFrame | None:
    """Per image, the share of ``parts`` (one per seed) that got it right; None if any part is missing."""
    parts = list(parts)
    if not parts or any(part is None for part in parts):
        return None
    common = _common(parts)
    if common is None:
        return None
    return pd.DataFrame({LABEL: common[0][LABEL], "correct": np.mean([p["correct"].to_numpy() for p in common], axis=0)},
                        index=common[0].index)


def paired(a: pd.DataFrame | None, b: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Correctness of ``a`` and ``b`` on the same images, in the same order; None when they cannot be paired."""
    if a is None or b is None:
        return None
    common = _common([a, b])
    return None if common is None else (common[0]["correct"].to_numpy(), common[1]["correct"].to_numpy())


def seeds_correct(group: pd.DataFrame | None, predictions_of: PredictionsOf | None, cell: Cell) -> list[pd.DataFrame] | None:
    """One correctness frame per run (seed) of ``group``, kept apart for a bootstrap that resamples seeds,
    in ascending ``train.seed`` (so that the bootstrap's draws map to seeds reproducibly); None if any
    run lacks the cell."""
    if group is None or predictions_of is None:
        return None
    if SEED_PARAM in group:
        group = group.iloc[np.argsort(pd.to_numeric(group[SEED_PARAM], errors="coerce").to_numpy(), kind="stable")]
    parts = [cell_correct(predictions_of(run_id), cell) for run_id in group["run_id"]]
    return None if not parts or any(part is None for part in parts) else parts


def paired_seeds(a: list[pd.DataFrame] | None, b: list[pd.DataFrame] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Correctness (seeds × images) of every seed of ``a`` and of ``b`` on the same images, in the same
    order; None when they cannot be paired."""
    if not a or not b:
        return None
    common = _common([*a, *b])
    if common is None:
        return None
    return (np.stack([part["correct"].to_numpy() for part in common[:len(a)]]),
            np.stack([part["correct"].to_numpy() for part in common[len(a):]]))
