"""What every table builder shares: the models the papers compare, the ``Context`` a table is built
in, the train x test matrix panel, and the points of a figure's curves.

When several configurations fit one model (e.g. two SAN runs with different epochs), the newest is
used and a note says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import pandas as pd

from analysis import plots
from analysis.bootstrap import Bootstrap
from analysis.predictions import Cell as MatrixCell, PredictionsOf, paired_seeds, seeds_correct
from analysis.report import FIXED_MODE, proxy_row
from analysis.tables.runs import inet_row, match, prepare_runs, resolution_kind, seed_groups, value
from analysis.tables.model import MISSING, PROXY_LEGEND, Cell, Notes, Panel, Stat, Table, format_signed
from records import names

NO_PREDICTIONS_NOTE = ("gains without [low, high]: a run of the model or of its I-Net has no per-image predictions "
                       "(matrix/predictions.parquet), or the two were evaluated on different validation images")


@dataclass(frozen=True)
class Model:
    label: str
    params: tuple[tuple[str, object], ...]
    kind: str = "multi"  # resolution_kind the runs must have; "any" for no constraint

    def criteria(self, backbone: str) -> dict:
        return {**dict(self.params), "model.backbone": backbone}


def _model(label: str, kind: str = "multi", **params) -> Model:
    return Model(label, tuple((k.replace("__", "."), v) for k, v in params.items()), kind)


SAN_DEFAULTS = dict(method__name="san", method__bn="private", method__scale_distill=True, method__meta_hidden=0,
                    method__convs="meta")
SAN = _model("SAN", **SAN_DEFAULTS)
SAN_NO_SD = _model("SAN w/o SD", **{**SAN_DEFAULTS, "method__scale_distill": False})
SAN_NO_SD_SHARED_BN = _model("SAN w/o SD + shared BN", **{**SAN_DEFAULTS, "method__scale_distill": False,
                                                           "method__bn": "shared"})
SAN_PRIVATE_CONVS = _model("SAN privatized convs", **{**SAN_DEFAULTS, "method__convs": "private"})
PARALLEL = _model("Parallel", method__name="parallel", method__bn="private")
PARALLEL_SHARED_BN = _model("Parallel (shared BN)", method__name="parallel", method__bn="shared")
RSNET = _model("RS-Net", method__name="rsnet", method__bn="private", method__distill="full", data__crop="single")


def san_mlp(hidden: int) -> Model:
    return _model(f"SAN MLP {hidden}", **{**SAN_DEFAULTS, "method__meta_hidden": hidden})


def rsnet_variant(label: str, distill: str = "full", crop: str = "single", kind: str = "multi") -> Model:
    return _model(label, kind=kind, method__name="rsnet", method__bn="private", method__distill=distill, data__crop=crop)


@dataclass
class Context:
    runs: pd.DataFrame
    notes: Notes
    digits: int
    predictions: PredictionsOf | None = None  # run id -> per-image predictions (make_tables reads the artifacts)
    bootstrap: Bootstrap | None = None  # make_tables --ci: an interval on every gain over I-Nets
    intervals_shown: bool = False

    def pick(self, model: Model, backbone: str, resolutions: Callable[[list[int]], bool] | None = None,
             what: str | None = None) -> pd.DataFrame | None:
        """The seeds of the newest configuration of ``model`` on ``backbone``; None if it has no runs."""
        kind = (lambda res: resolution_kind(res) == model.kind) if model.kind != "any" else None
        both = (lambda res: (kind is None or kind(res)) and (resolutions is None or resolutions(res)))
        groups = seed_groups(match(self.runs, model.criteria(backbone), both))
        if len(groups) > 1:
            self.notes.add(f"note: {len(groups)} configurations fit {what or model.label} {backbone}; "
                           f"using the newest (config hash {_hash_of(groups[0])})")
        return groups[0] if groups else None

    def inet_set(self, backbone: str) -> pd.DataFrame | None:
        """All runs (every resolution, every seed) of the newest I-Net set on ``backbone``."""
        runs = match(self.runs, {"method.name": "individual", "model.backbone": backbone})
        sets = seed_groups(runs, drop=("data.resolutions",))
        if len(sets) > 1:
            column = names.tag_column(names.GROUP)
            group = sets[0][column].iloc[0] if column in sets[0] else "?"
            self.notes.add(f"note: {len(sets)} I-Net sets on {backbone}; using the newest (group {group})")
        return sets[0] if sets else None

    def stat(self, group, mode, row, test, metric="top1") -> Stat | None:
        return self.notes.seen(value(group, mode, row, test, metric))

    def text(self, stat: Stat | None) -> str:
        return stat.text(self.digits) if stat is not None else MISSING

    def gain_text(self, top1: Stat, base: Stat, group, cell: MatrixCell, base_group, base_cell: MatrixCell) -> str:
        """`` (+2.0)``: the top-1 gain of ``group``'s cell over ``base_group``'s (the I-Net); with --ci
        `` (+2.0 [+1.6, +2.4])``, its bootstrap interval over seeds and validation images."""
        text = format_signed(top1.mean - base.mean, self.digits)
        if self.bootstrap is not None:
            pair = paired_seeds(seeds_correct(group, self.predictions, cell),
                                seeds_correct(base_group, self.predictions, base_cell))
            if pair is None:
                self.notes.add(NO_PREDICTIONS_NOTE)
            else:
                low, high = self.bootstrap.interval(*pair)
                text += f" [{format_signed(low, self.digits)}, {format_signed(high, self.digits)}]"
                self.intervals_shown = True
        return f" ({text})"


def _hash_of(group: pd.DataFrame) -> str:
    column = names.tag_column(names.CONFIG_HASH)
    return str(group[column].iloc[0]) if column in group else "?"


@dataclass
class MatrixRow:
    label: str
    group: pd.DataFrame | None  # the seeds whose matrix row is read
    row: int  # matrix row (training resolution)
    what: str  # names the model in missing-lines


def matrix_panel(ctx: Context, title: str, rows: list[MatrixRow], columns: list[int], mode: str = FIXED_MODE,
                 proxy_of: list[int] | None = None) -> Panel:
    """Train rows x test columns of one mode; with ``proxy_of`` (training resolutions) S(T) cells are marked."""
    body, means, marked = [], {}, set()
    for mrow in rows:
        cells, absent = [Cell(mrow.label)], []
        if mrow.group is None:
            ctx.notes.missing(mrow.what)
        for test in columns:
            stat = ctx.stat(mrow.group, mode, mrow.row, test)
            is_proxy = proxy_of is not None and mrow.row == proxy_row(proxy_of, test)
            cells.append(Cell(ctx.text(stat), marked=is_proxy))
            means[(mrow.row, test)] = stat.mean if stat else math.nan
            if is_proxy or mrow.row == test:  # the heatmap outlines the diagonal too (its caption says so)
                marked.add((mrow.row, test))
            if stat is None and mrow.group is not None:
                absent.append(test)
        if absent:
            ctx.notes.not_evaluated(f"{mrow.what} row {mrow.row} ({mode})", absent)
        body.append(cells)
    frame = pd.DataFrame([[means[(r.row, t)] for t in columns] for r in rows],
                         index=[r.row for r in rows], columns=columns)
    return Panel(title, ["train \\ test", *map(str, columns)], body, heatmap=(frame, marked))


def inet_rows(inets, resolutions: list[int], backbone: str) -> list[MatrixRow]:
    return [MatrixRow(str(r), inet_row(inets, r), r, f"I-Nets {backbone} r={r}" if inets is not None else f"I-Nets {backbone}")
            for r in resolutions]


def model_rows(group, resolutions: list[int], what: str) -> list[MatrixRow]:
    return [MatrixRow(str(r), group, r, what) for r in resolutions]


def new_table(name: str, title: str, runs: pd.DataFrame, commands: Iterable[str], digits: int,
              predictions: PredictionsOf | None = None, bootstrap: Bootstrap | None = None) -> tuple[Table, Context]:
    notes = Notes(commands)
    return Table(name, title), Context(prepare_runs(runs), notes, digits, predictions, bootstrap)


def finish_table(table: Table, ctx: Context, proxy_legend: bool = False) -> Table:
    if not table.panels:
        ctx.notes.missing("every model of this table")
    if proxy_legend and any(c.marked for p in table.panels for row in p.rows for c in row):
        table.legend.append(PROXY_LEGEND)
    if ctx.intervals_shown:
        table.legend.append(ctx.bootstrap.legend())
    table.notes = ctx.notes.footer()
    return table


def first_run(*groups) -> pd.Series | None:
    return next((g.iloc[0] for g in groups if g is not None), None)


def resolution_label(r: int) -> str:
    return f"{r}×{r}"


class Points:
    """Collects (x, mean) points of one line of a figure, skipping missing cells."""

    def __init__(self, label: str):
        self.label, self.x, self.y = label, [], []

    def add(self, x: float, stat: Stat | None) -> None:
        if stat is not None:
            self.x.append(x)
            self.y.append(stat.mean)

    def curve(self, dashed: bool = False, **kwargs) -> plots.Curve:
        order = sorted(range(len(self.x)), key=lambda i: self.x[i])
        return plots.Curve(self.label, [self.x[i] for i in order], [self.y[i] for i in order], dashed=dashed, **kwargs)
