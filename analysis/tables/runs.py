"""The MLflow job runs a table reads: which count, how they group into seeds, and their cell values.

Input: the frame ``mlflow.search_runs`` returns (``run_id``, ``status``, ``start_time``, ``params.*``,
``tags.*``, ``metrics.*``), optionally with a ``suite`` column. Params are the flattened job config
rendered by ``jobspec.param_value``; accuracies are the cell metrics that
``analysis.report.log_matrix`` writes (``metrics.acc1/train{r}_test{s}`` ...).

- only FINISHED job runs count, and per config hash (tag ``records.names.CONFIG_HASH``) only the newest;
- runs whose configs differ only in ``train.seed`` and in what the config hash ignores (placement,
  the ``tag`` label, switches the method does not read: ``jobspec.hashed_part``) are seeds of one
  model, and a cell is a ``Stat`` over them;
- an I-Net set is one job per resolution (``method.name`` = individual, ``data.resolutions`` = [r]);
- of a suite's search (``jobspec.search``) only each search's winning sample and its repeats count
  (``records.search_runs``): the other samples are configurations the search ruled out, and those
  stopped early have no matrix.
"""
from __future__ import annotations

import json
from typing import Callable

import pandas as pd

from analysis.report import FIXED_MODE, metric_name, parse_metric_name
from analysis.tables.model import Stat
from backbones.catalog import BACKBONES
from jobspec import JobConfig, flatten, hashed_part, nest, param_value
from records import names
from records.search_runs import SearchRun, winners_with_repeats

SEED_KEY = "train.seed"
DEFAULT_PARAMS = {k: param_value(v) for k, v in flatten(JobConfig()).items()}
# A key added after runs were logged gets, in those runs, the value that reproduces what they did when
# that differs from its default: MobileNetV2 was trained with torchvision's Dropout(0.2) before
# model.dropout existed (a key the other backbones do not read).
BEFORE_THE_KEY_EXISTED = {"model.dropout": param_value(0.2)}


def prepare_runs(raw: pd.DataFrame) -> pd.DataFrame:
    """FINISHED job runs, newest per config hash, with every config param present (defaults filled)."""
    if raw is None or raw.empty:
        return pd.DataFrame(columns=["run_id", "start_time", *(f"params.{k}" for k in DEFAULT_PARAMS)])
    runs = raw.copy()
    if "status" in runs:
        runs = runs[runs["status"] == "FINISHED"]
    kind, config_hash = names.tag_column(names.KIND), names.tag_column(names.CONFIG_HASH)
    if kind in runs:
        runs = runs[runs[kind] == names.JOB_RUN]
    runs = search_winners(runs)
    runs = runs.sort_values("start_time", ascending=False, kind="stable")
    if config_hash in runs:
        hashed = runs[config_hash].notna()
        runs = pd.concat([runs[hashed].drop_duplicates(config_hash), runs[~hashed]])
        runs = runs.sort_values("start_time", ascending=False, kind="stable")
    for key, default in DEFAULT_PARAMS.items():  # runs logged before a config key existed had its default
        default = BEFORE_THE_KEY_EXISTED.get(key, default)
        column = f"params.{key}"
        runs[column] = runs[column].fillna(default) if column in runs else default
    return runs.reset_index(drop=True)


def search_winners(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without the search samples that did not win their search (repeats of a winner stay)."""
    column = names.tag_column(names.SEARCH)
    if column not in runs or runs[column].isna().all():
        return runs
    searched = runs[runs[column].notna()]
    seeds = winners_with_repeats(SearchRun.of_row(row) for _, row in searched.iterrows())
    kept = {run.run_id for group in seeds.values() for run in group}
    return runs[runs[column].isna() | runs["run_id"].isin(kept)]


def resolutions_of(run: pd.Series) -> list[int]:
    return [int(r) for r in json.loads(run["params.data.resolutions"])]


def resolution_kind(resolutions: list[int]) -> str:
    """'individual' (one), 'single' (one value repeated, RS-Nets Table 6), or 'multi'."""
    if len(resolutions) == 1:
        return "individual"
    return "single" if len(set(resolutions)) == 1 else "multi"


def match(runs: pd.DataFrame, criteria: dict, resolutions: Callable[[list[int]], bool] | None = None) -> pd.DataFrame:
    """Runs whose params equal ``criteria`` (Python values, compared as ``param_value`` strings)."""
    mask = pd.Series(True, index=runs.index)
    for key, value in criteria.items():
        mask &= runs[f"params.{key}"] == param_value(value)
    if resolutions is not None:
        mask &= runs.apply(lambda run: resolutions(resolutions_of(run)), axis=1).astype(bool) if len(runs) else mask
    return runs[mask]


def _params_tree(run: pd.Series) -> dict:
    """The run's params as a nested config dict of param strings; params it did not log are left out."""
    return nest({column[len("params."):]: value for column, value in run.items()
                 if str(column).startswith("params.") and (isinstance(value, str) or not pd.isna(value))})


def configuration_key(run: pd.Series, drop: tuple[str, ...] = ()) -> str:
    """What the run's config hash covers, less the seed and ``drop``: equal for seeds of one model."""
    flat = flatten(hashed_part(_params_tree(run)))
    return json.dumps({k: v for k, v in flat.items() if k != SEED_KEY and k not in drop}, sort_keys=True)


def seed_groups(runs: pd.DataFrame, drop: tuple[str, ...] = ()) -> list[pd.DataFrame]:
    """Runs split into configurations (everything the hash covers but the seed and ``drop``), newest first."""
    if runs.empty:
        return []
    keys = runs.apply(configuration_key, axis=1, drop=drop)
    groups = [g for _, g in runs.groupby(keys, sort=False)]
    return sorted(groups, key=lambda g: g["start_time"].max(), reverse=True)


def value(group: pd.DataFrame | None, mode: str, row: int, test: int, metric: str = "top1") -> Stat | None:
    """A cell over the seeds of ``group``; None when no run has it."""
    if group is None:
        return None
    column = f"metrics.{metric_name(mode, row, test, metric)}"
    if column not in group:
        return None
    values = [float(v) for v in group[column] if pd.notna(v)]
    return Stat(tuple(values)) if values else None


def test_columns(group: pd.DataFrame | None, mode: str = FIXED_MODE) -> set[int]:
    """Test resolutions at which ``group`` has cells of ``mode``."""
    if group is None:
        return set()
    tests = set()
    for column in group.columns:
        if column.startswith("metrics.") and group[column].notna().any():
            key = parse_metric_name(column[len("metrics."):])
            if key is not None and key[0] == mode:
                tests.add(key[2])
    return tests


def test_columns_of(*groups, mode: str = FIXED_MODE) -> list[int]:
    """Large to small, the test resolutions at which any of ``groups`` has cells of ``mode``."""
    return sorted(set().union(*(test_columns(g, mode) for g in groups)), reverse=True)


def backbones(runs: pd.DataFrame) -> list[str]:
    """Backbones in the papers' order (ResNet-18, ResNet-50, MobileNetV2, tiny), then any other."""
    present = set(runs["params.model.backbone"]) if not runs.empty else set()
    return [b for b in BACKBONES if b in present] + sorted(present - set(BACKBONES))


def inet_row(inets: pd.DataFrame | None, resolution: int) -> pd.DataFrame | None:
    """The seeds of the I-Net trained at ``resolution``."""
    if inets is None:
        return None
    rows = inets[inets.apply(lambda run: resolutions_of(run) == [resolution], axis=1)]
    return rows if len(rows) else None


def inet_resolutions(inets: pd.DataFrame | None) -> list[int]:
    if inets is None:
        return []
    return sorted({resolutions_of(run)[0] for _, run in inets.iterrows()}, reverse=True)


def training_resolutions(*groups: pd.DataFrame | None) -> list[int]:
    """Large to small, of the first group given that has runs (pass multi-resolution models first)."""
    for group in groups:
        if group is not None:
            if (group["params.method.name"] == "individual").any():  # an I-Net set: one job per resolution
                return inet_resolutions(group)
            return sorted(set(resolutions_of(group.iloc[0])), reverse=True)
    return []
