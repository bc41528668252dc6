"""Every name resolab writes into MLflow: tags, run kinds, metric names and artifact paths.

The values are part of every existing tracking store: a renamed value would hide the runs already
recorded under the old one, so these strings never change; new names may be added.

Store layout: one MLflow experiment per suite (named after the suite); one parent run per ``resolab run``
invocation that records something (``KIND`` = ``SUITE_RUN``); one child run per job (``KIND`` =
``JOB_RUN``) carrying the flattened job config as params, the tags of ``JOB_TAGS`` (``records.runs``),
per-epoch metrics (step = epoch: loss/<term>, acc1/r<res>, acc1/mean, compute (1e12 multiply-adds so far), lr,
img_per_s, mred_weight/r<res>) and the
final accuracy matrix (cell metrics named by ``metric_name``, artifacts under ``MATRIX_DIR``).
"""
from __future__ import annotations

import re

PREFIX = "resolab."  # of every tag below that resolab owns (``records.reuse`` copies them all)

# What a run is: a suite's parent run, a job's run, or the run that holds a suite's rendered tables.
KIND = "resolab.kind"
SUITE_RUN, JOB_RUN, TABLES_RUN = "suite", "job", "tables"

# A job run's identity: where it belongs and what it trained.
SUITE = "resolab.suite"
JOB = "resolab.job"
GROUP = "resolab.group"
METHOD = "resolab.method"
BACKBONE = "resolab.backbone"
CONFIG_HASH = "resolab.config_hash"
# The trained model's identity (the config hash without eval.*): runs that share it share a model.
TRAINING_HASH = "resolab.training_hash"
CODE_VERSION = "resolab.code_version"
TRAIN_RESOLUTIONS = "resolab.train_resolutions"
SEED = "resolab.seed"
USER_TAG = "resolab.tag"  # the job config's free-form ``tag``
# The job's stable checkpoint directory, absolute: a later evaluation finds the model there even when
# that suite ran with another --storage.
CHECKPOINT_DIR = "resolab.checkpoint_dir"
# Why a run failed or was ended (the error's last lines, an interruption, a supersession).
ERROR = "resolab.error"

# A run copied from a FINISHED run of another suite (``records.reuse``): the source run id.
REUSED_FROM = "resolab.reused_from"
# A run that only evaluated another run's model: that run's id, the code that trained it
# (CODE_VERSION is the code that evaluated it) and the checkpoint it was evaluated from.
EVALUATED_FROM = "resolab.evaluated_from"
SOURCE_CODE_VERSION = "resolab.source_code_version"
SOURCE_CHECKPOINT = "resolab.source_checkpoint"
# A sample of a suite's search (``jobspec.search``): the search it belongs to, what that search ranks by
# (metric and mode), and its role: a sample, or a repeat of the search's best sample with another seed.
SEARCH = "resolab.search"
SEARCH_METRIC = "resolab.search_metric"
SEARCH_MODE = "resolab.search_mode"
SEARCH_ROLE = "resolab.search_role"
SEARCH_TAGS = (SEARCH, SEARCH_METRIC, SEARCH_MODE, SEARCH_ROLE)  # what a job is to its suite's search
# A sample its search's scheduler stopped early: the epochs it had trained (counted from 1). Its run is
# FINISHED with its checkpoint kept, but has no matrix, and nothing outside its search reuses it.
EARLY_STOPPED = "resolab.early_stopped"

# A run that evaluated an imported model file (``resolab evaluate-model``): the file's path.
MODEL_FILE = "resolab.model_file"

# The suite driver's parent run: the command line, where the driver runs, and the time it last said it
# was alive (a job whose driver has been silent too long was interrupted).
COMMAND = "resolab.command"
DRIVER = "resolab.driver"
DRIVER_HEARTBEAT = "resolab.driver_heartbeat"

# MLflow's own tags that resolab sets: a run's description (shown on its page) and its parent run.
DESCRIPTION = "mlflow.note.content"
PARENT_RUN = "mlflow.parentRunId"


def tag_column(tag: str) -> str:
    """The column of ``tag`` in the frame of ``mlflow.search_runs``."""
    return f"tags.{tag}"


def tag_equals(tag: str, value: str) -> str:
    """A ``search_runs`` filter clause: the run's ``tag`` is ``value``."""
    return f"tags.`{tag}` = '{value}'"


# search_runs filters of the run kinds.
JOB_FILTER = tag_equals(KIND, JOB_RUN)
FINISHED_JOB_FILTER = f"{JOB_FILTER} and attributes.status = 'FINISHED'"


# The per-epoch metrics of a job run (step = epoch), by name prefix: what a trial's epoch reports log,
# and what an evaluation-only run copies from the run that trained its model.
EPOCH_KEYS = ("loss/", "acc1/", "mred_weight/", "lr", "img_per_s", "epoch_time_s", "val_time_s", "world_size",
              "start_epoch", "compute")

# The final accuracy matrix of a job, as metrics (top-1 ``acc1``, top-5 ``acc5``; values in %, step 0):
# - mode ``fixed``:            ``acc1/train{r}_test{s}``
# - any other per-row mode:    ``acc1/{mode}/train{r}_test{s}``   (SAN ideal, ideal_calib)
# - adaptive modes (row 0):    ``acc1/{mode}/test{s}``            (SAN proxy, RS-Net nearest / interp)
# - MAdds, when given:         ``madds/test{s}``                  (multiply-adds at test resolution s)
# The per-epoch ``acc1/r{res}`` metrics of the training loop do not match these patterns.
FIXED_MODE = "fixed"
ADAPTIVE_ROW = 0  # the matrix row of an adaptive mode (one row, whatever the training resolutions)
METRIC_PREFIX = {"top1": "acc1", "top5": "acc5"}
_CELL_NAME = re.compile(r"^(?P<prefix>acc1|acc5)/(?:(?P<mode>[A-Za-z0-9_]+)/)?"
                        r"(?:train(?P<row>\d+)_)?test(?P<test>\d+)$")


def metric_name(mode: str, row: int, test_res: int, metric: str = "top1") -> str:
    """The MLflow metric name of one matrix cell."""
    prefix = METRIC_PREFIX[metric]
    if row == ADAPTIVE_ROW:
        return f"{prefix}/{mode}/test{test_res}"
    if mode == FIXED_MODE:
        return f"{prefix}/train{row}_test{test_res}"
    return f"{prefix}/{mode}/train{row}_test{test_res}"


def parse_metric_name(name: str) -> tuple[str, int, int, str] | None:
    """(mode, row, test_res, 'top1'|'top5') of a cell metric name; None for any other metric."""
    match = _CELL_NAME.match(name)
    if not match:
        return None
    mode, row = match["mode"], match["row"]
    metric = "top1" if match["prefix"] == "acc1" else "top5"
    if mode is None and row is None:
        return None  # "acc1/test32" names no mode
    if mode is None:
        return FIXED_MODE, int(row), int(match["test"]), metric
    if mode == FIXED_MODE:
        return None  # fixed cells never carry the mode segment
    return mode, (ADAPTIVE_ROW if row is None else int(row)), int(match["test"]), metric


def madds_metric_name(test_res: int) -> str:
    return f"madds/test{int(test_res)}"


# A job's final artifacts, all under MATRIX_DIR: the matrix (long form), its figures, the per-image
# predictions and, with ``eval.gap_cdf``, the GAP activation quantiles of RS-Nets Fig. 3 right.
MATRIX_DIR = "matrix"
MATRIX_PARQUET = "matrix.parquet"
MATRIX_CSV = "matrix.csv"
PREDICTIONS_PARQUET = "predictions.parquet"
GAP_CDF_PARQUET = "gap_cdf.parquet"
