"""The papers' tables rebuilt from MLflow job runs, as pure functions of a runs DataFrame.

Input: the frame ``mlflow.search_runs`` returns (``run_id``, ``status``, ``start_time``, ``params.*``,
``tags.*``, ``metrics.*``), optionally with a ``suite`` column. Params are the flattened job config
rendered by ``orchestrator.tracking.param_value``; accuracies are the cell metrics that
``analysis.report.log_matrix`` writes (``metrics.acc1/train{r}_test{s}`` ...).

Rules every table follows:
- only FINISHED job runs count, and per ``resolab.config_hash`` only the newest;
- runs whose configs differ only in ``train.seed`` (or in placement: ``resources.*``,
  ``data.loader_workers``, ``data.root``) are seeds of one model: cells print ``mean ± std``
  (sample std, ddof=1); a single seed prints the mean;
- a cell without runs prints ``—`` (never 0) and a ``missing: ... — run: resolab run <suite file>``
  line goes under the table;
- when several configurations fit one model (e.g. two SAN runs with different epochs), the newest
  is used and a note says so.

Builders return a ``Table`` (panels of text cells plus notes and figure factories); ``to_markdown``,
``to_latex`` and ``to_csv`` render it.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pandas as pd

from analysis import plots
from analysis.report import FIXED_MODE, metric_name, parse_metric_name, proxy_row
from orchestrator.config import flatten
from orchestrator.schema import BACKBONES, DataConfig, JobConfig, MethodConfig, ModelConfig
from orchestrator.tracking import param_value

MISSING = "—"
NOT_SEED_KEYS = ("train.seed", "data.loader_workers", "data.root")
NOT_SEED_PREFIXES = ("resources.",)
DEFAULT_PARAMS = {k: param_value(v) for k, v in flatten(JobConfig().to_dict()).items()}
# orchestrator.data builds the synthetic dataset with this many classes when data.num_classes is null.
SYNTHETIC_DEFAULT_CLASSES = 10
PROXY_LEGEND = "**bold** = proxy inference: row S(T), the training resolution nearest to the test resolution T (ties to the larger)"


# --------------------------------------------------------------------------------------------
# Numbers and cells


def _fixed(x: float, digits: int) -> str:
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _signed(x: float, digits: int) -> str:
    text = f"{x:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


@dataclass(frozen=True)
class Stat:
    """One cell's values over seeds."""
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0  # sample std (ddof=1)

    def text(self, digits: int) -> str:
        mean = _fixed(self.mean, digits)
        return f"{mean} ± {_fixed(self.std, digits)}" if self.n > 1 else mean


@dataclass
class Cell:
    text: str
    marked: bool = False  # proxy-inference cell, or the best of a column


def missing_cell() -> Cell:
    return Cell(MISSING)


@dataclass
class Panel:
    title: str
    header: list[str]  # first entry names the row labels
    rows: list[list[Cell]]  # first cell of each row is its label
    heatmap: tuple[pd.DataFrame, set] | None = None  # (train x test means, marked cells) for a figure


@dataclass
class Table:
    name: str
    title: str
    panels: list[Panel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # missing-lines and footnotes, printed under the table
    legend: list[str] = field(default_factory=list)
    figures: dict[str, Callable] = field(default_factory=dict)  # name -> () -> matplotlib Figure

    def all_figures(self) -> dict[str, Callable]:
        """Explicit figures plus one heatmap per matrix panel."""
        figures = dict(self.figures)
        for i, panel in enumerate(self.panels):
            if panel.heatmap is not None and not panel.heatmap[0].isna().all().all():
                frame, marked = panel.heatmap
                figures[f"heatmap{i + 1}"] = functools.partial(plots.heatmap, frame, marked, panel.title)
        return figures


class Notes:
    """The lines under a table; missing-lines name the command that fills the gap."""

    def __init__(self, commands: Iterable[str]):
        self.commands = " or ".join(commands) or "resolab run experiments/<suite>.yaml"
        self.lines: list[str] = []
        self.max_seeds = 1

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)

    def missing(self, what: str) -> None:
        self.add(f"missing: {what} — run: {self.commands}")

    def not_evaluated(self, what: str, tests: list[int]) -> None:
        self.add(f"missing: {what} at test {', '.join(map(str, tests))} — the run has no such cells "
                 "(its eval.test_resolutions / eval modes do not include them)")

    def seen(self, stat: Stat | None) -> Stat | None:
        if stat is not None:
            self.max_seeds = max(self.max_seeds, stat.n)
        return stat

    def footer(self) -> list[str]:
        seeds = [f"values: mean ± sample std (ddof=1) over up to {self.max_seeds} seeds"] if self.max_seeds > 1 else []
        return seeds + self.lines


# --------------------------------------------------------------------------------------------
# Runs: selection, seeds, values


def prepare_runs(raw: pd.DataFrame) -> pd.DataFrame:
    """FINISHED job runs, newest per config hash, with every config param present (defaults filled)."""
    if raw is None or raw.empty:
        return pd.DataFrame(columns=["run_id", "start_time", *(f"params.{k}" for k in DEFAULT_PARAMS)])
    runs = raw.copy()
    if "status" in runs:
        runs = runs[runs["status"] == "FINISHED"]
    if "tags.resolab.kind" in runs:
        runs = runs[runs["tags.resolab.kind"] == "job"]
    runs = runs.sort_values("start_time", ascending=False, kind="stable")
    if "tags.resolab.config_hash" in runs:
        hashed = runs["tags.resolab.config_hash"].notna()
        runs = pd.concat([runs[hashed].drop_duplicates("tags.resolab.config_hash"), runs[~hashed]])
        runs = runs.sort_values("start_time", ascending=False, kind="stable")
    for key, default in DEFAULT_PARAMS.items():  # runs logged before a config key existed had its default
        column = f"params.{key}"
        runs[column] = runs[column].fillna(default) if column in runs else default
    return runs.reset_index(drop=True)


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


def _seed_free_columns(runs: pd.DataFrame, drop: tuple[str, ...] = ()) -> list[str]:
    return [c for c in runs.columns if c.startswith("params.")
            and c[len("params."):] not in NOT_SEED_KEYS + drop
            and not c[len("params."):].startswith(NOT_SEED_PREFIXES)]


def seed_groups(runs: pd.DataFrame, drop: tuple[str, ...] = ()) -> list[pd.DataFrame]:
    """Runs split into configurations (everything but the seed and ``drop``), newest first."""
    if runs.empty:
        return []
    columns = _seed_free_columns(runs, drop)
    groups = [g for _, g in runs.groupby(columns, sort=False, dropna=False)]
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


def backbones(runs: pd.DataFrame) -> list[str]:
    """Backbones in the papers' order (ResNet-18, ResNet-50, MobileNetV2, tiny), then any other."""
    present = set(runs["params.model.backbone"]) if not runs.empty else set()
    return [b for b in BACKBONES if b in present] + sorted(present - set(BACKBONES))


# --------------------------------------------------------------------------------------------
# Models the tables compare


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
            group = sets[0]["tags.resolab.group"].iloc[0] if "tags.resolab.group" in sets[0] else "?"
            self.notes.add(f"note: {len(sets)} I-Net sets on {backbone}; using the newest (group {group})")
        return sets[0] if sets else None

    def stat(self, group, mode, row, test, metric="top1") -> Stat | None:
        return self.notes.seen(value(group, mode, row, test, metric))

    def text(self, stat: Stat | None) -> str:
        return stat.text(self.digits) if stat is not None else MISSING


def _hash_of(group: pd.DataFrame) -> str:
    return str(group["tags.resolab.config_hash"].iloc[0]) if "tags.resolab.config_hash" in group else "?"


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


# --------------------------------------------------------------------------------------------
# Model size (resolab describe)


def num_classes_of(run: pd.Series) -> tuple[int, str | None]:
    """Classes the run's model had: the ``data.num_classes`` param; when that is null, a
    ``num_classes`` metric if a run logged one; else the synthetic dataset's default (10); else an
    ImageNet-sized guess of 1000, returned with a footnote."""
    param = run.get("params.data.num_classes")
    if isinstance(param, str) and param != "null":
        return int(param), None
    metric = run.get("metrics.num_classes")
    if metric is not None and pd.notna(metric):
        return int(metric), None
    if run.get("params.data.dataset") == "synthetic":
        return SYNTHETIC_DEFAULT_CLASSES, None
    return 1000, "Total Params assume 1000 classes: data.num_classes is not set in the runs"


@functools.lru_cache(maxsize=None)
def _describe(backbone: str, small_input: bool, width: int, method: str, bn: str, convs: str, meta_hidden: int,
              resolutions: tuple[int, ...], num_classes: int) -> dict:
    from orchestrator.describe import describe  # builds models: torch only when a table needs sizes

    cfg = JobConfig(model=ModelConfig(backbone=backbone, small_input=small_input, width=width),
                    method=MethodConfig(name=method, bn=bn, convs=convs, meta_hidden=meta_hidden),
                    data=DataConfig(resolutions=list(resolutions)))
    return describe(cfg, num_classes)


def describe_run(run: pd.Series, notes: Notes, method: str | None = None,
                 resolutions: list[int] | None = None) -> dict:
    """``resolab describe`` of the run's model (or of ``method`` at ``resolutions`` on its backbone)."""
    classes, footnote = num_classes_of(run)
    if footnote:
        notes.add(footnote)
    p = run.get
    try:
        return _describe(p("params.model.backbone"), p("params.model.small_input") == "true", int(p("params.model.width")),
                     method or p("params.method.name"), p("params.method.bn"), p("params.method.convs"),
                         int(p("params.method.meta_hidden")), tuple(resolutions or resolutions_of(run)), classes)
    except Exception as exc:  # noqa: BLE001 — a size we cannot count must not cost the accuracies
        notes.add(f"note: cannot describe {p('params.model.backbone')} / {method or p('params.method.name')}: {exc}")
        return {"madds": {}, "total_params_M": None}


def params_text(info: dict) -> str:
    return MISSING if info["total_params_M"] is None else f"{info['total_params_M']:.2f}M"


def madds_text(madds: dict, resolution: int) -> str:
    return plots.format_madds(madds[str(resolution)]) if str(resolution) in madds else MISSING


# --------------------------------------------------------------------------------------------
# Matrix panels (SAN tables)


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
            if is_proxy:
                marked.add((mrow.row, test))
            if stat is None and mrow.group is not None:
                absent.append(test)
        if absent:
            ctx.notes.not_evaluated(f"{mrow.what} row {mrow.row} ({mode})", absent)
        body.append(cells)
    frame = pd.DataFrame([[means[(r.row, t)] for t in columns] for r in rows],
                         index=[r.row for r in rows], columns=columns)
    return Panel(title, ["train \\ test", *map(str, columns)], body, heatmap=(frame, marked))


def _columns(*groups, mode: str = FIXED_MODE) -> list[int]:
    return sorted(set().union(*(test_columns(g, mode) for g in groups)), reverse=True)


def _inet_rows(inets, resolutions: list[int], backbone: str) -> list[MatrixRow]:
    return [MatrixRow(str(r), inet_row(inets, r), r, f"I-Nets {backbone} r={r}" if inets is not None else f"I-Nets {backbone}")
            for r in resolutions]


def _model_rows(group, resolutions: list[int], what: str) -> list[MatrixRow]:
    return [MatrixRow(str(r), group, r, what) for r in resolutions]


def _new_table(name: str, title: str, runs: pd.DataFrame, commands: Iterable[str], digits: int) -> tuple[Table, Context]:
    notes = Notes(commands)
    return Table(name, title), Context(prepare_runs(runs), notes, digits)


def _finish(table: Table, ctx: Context, proxy_legend: bool = False) -> Table:
    if not table.panels:
        ctx.notes.missing("every model of this table")
    if proxy_legend and any(c.marked for p in table.panels for row in p.rows for c in row):
        table.legend.append(PROXY_LEGEND)
    table.notes = ctx.notes.footer()
    return table


def _san_vs_inets_panels(ctx: Context, backbone: str, san_model: Model = SAN) -> list[Panel]:
    """SAN Table 1 / 6 layout for one backbone: I-Nets matrix beside the SAN matrix."""
    inets, san = ctx.inet_set(backbone), ctx.pick(san_model, backbone)
    if inets is None and san is None:
        return []
    train = sorted(set(training_resolutions(san)) | set(inet_resolutions(inets)), reverse=True)
    columns = _columns(san, inets)
    return [matrix_panel(ctx, f"{backbone} — I-Nets (top-1 %)", _inet_rows(inets, train, backbone), columns),
            matrix_panel(ctx, f"{backbone} — {san_model.label} (top-1 %, fixed rows)",
                         _model_rows(san, train, f"{san_model.label} {backbone}"), columns,
                         proxy_of=training_resolutions(san) or train)]


def _model_matrix_panels(ctx: Context, backbone: str, models: list[Model]) -> list[Panel]:
    """One proxy-marked matrix per model present on ``backbone``; absent ones get a missing-line
    (only when some model of the table ran on this backbone)."""
    groups = [(model, ctx.pick(model, backbone)) for model in models]
    if all(group is None for _, group in groups):
        return []
    panels = []
    for model, group in groups:
        if group is None:
            ctx.notes.missing(f"{model.label} {backbone}")
            continue
        train = training_resolutions(group)
        panels.append(matrix_panel(ctx, f"{backbone} — {model.label} (top-1 %)",
                                   _model_rows(group, train, f"{model.label} {backbone}"), _columns(group),
                                   proxy_of=train))
    return panels


# --------------------------------------------------------------------------------------------
# SAN tables


def san_table1(runs, commands=(), digits=2, *, name="san_table1",
               title="SAN Table 1: I-Nets (left) vs SAN (right), top-1 % on a spectrum of test resolutions") -> Table:
    table, ctx = _new_table(name, title, runs, commands, digits)
    for backbone in backbones(ctx.runs):
        table.panels += _san_vs_inets_panels(ctx, backbone)
    return _finish(table, ctx, proxy_legend=True)


def san_table6(runs, commands=(), digits=2) -> Table:
    return san_table1(runs, commands, digits, name="san_table6",
                      title="SAN Table 6: I-Nets (top) vs SAN (bottom) at large training resolutions, top-1 %")


def san_table2(runs, commands=(), digits=2) -> Table:
    """SAN at test resolutions that are not training resolutions: ideal, ideal + BN calibration, proxy."""
    table, ctx = _new_table("san_table2", "SAN Table 2: SAN at test resolutions outside the training set — ideal "
                            "inference before / after BN calibration, and proxy inference", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        san = ctx.pick(SAN, backbone)
        if san is None:
            continue
        train = training_resolutions(san)
        columns = [t for t in _columns(san, mode="ideal_calib") or _columns(san) if t not in train]
        rows = _model_rows(san, train, f"SAN {backbone}")
        for mode, label in (("ideal", "ideal inference, before BN calibration"),
                            ("ideal_calib", "ideal inference, after BN calibration"),
                            (FIXED_MODE, "proxy inference (fixed rows)")):
            table.panels.append(matrix_panel(ctx, f"{backbone} — {label}", rows, columns, mode=mode, proxy_of=train))
    return _finish(table, ctx, proxy_legend=True)


def san_table3(runs, commands=(), digits=2) -> Table:
    table, ctx = _new_table("san_table3", "SAN Table 3: SAN w/o scale distillation (left) and w/o SD + shared BN "
                            "(right), top-1 %", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        table.panels += _model_matrix_panels(ctx, backbone, [SAN_NO_SD, SAN_NO_SD_SHARED_BN])
    return _finish(table, ctx, proxy_legend=True)


def san_table4(runs, commands=(), digits=2) -> Table:
    table, ctx = _new_table("san_table4", "SAN Table 4: parallel models with privatized convolutions per resolution "
                            "(+ scale distillation), top-1 %", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        table.panels += _model_matrix_panels(ctx, backbone, [SAN_PRIVATE_CONVS])
    return _finish(table, ctx, proxy_legend=True)


def san_table5(runs, commands=(), digits=2) -> Table:
    """Accuracy drop (linear meta net − MLP meta net), cell-wise; negative = the MLP is better."""
    table, ctx = _new_table("san_table5", "SAN Table 5: top-1 drop of SAN with an MLP meta network (8 / 16 hidden) "
                            "vs the linear one; negative = improvement", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        linear = ctx.pick(SAN, backbone, what="SAN linear (meta_hidden 0)")
        mlps = {hidden: ctx.pick(san_mlp(hidden), backbone) for hidden in (8, 16)}
        if linear is None and all(g is None for g in mlps.values()):
            continue
        if linear is None:
            ctx.notes.missing(f"SAN linear meta network (meta_hidden 0) {backbone}")
        for hidden, mlp in mlps.items():
            if mlp is None:
                ctx.notes.missing(f"SAN MLP {hidden} (meta_hidden {hidden}) {backbone}")
            table.panels.append(_drop_panel(ctx, f"{backbone} — drop, MLP {hidden} vs linear", linear, mlp))
    return _finish(table, ctx)


def _drop_panel(ctx: Context, title: str, base, other) -> Panel:
    train = training_resolutions(base, other)
    columns = sorted(set(_columns(base)) & set(_columns(other)), reverse=True) if base is not None and other is not None \
        else _columns(*(g for g in (base, other) if g is not None))
    rows = []
    for r in train:
        cells = [Cell(str(r))]
        for t in columns:
            a, b = ctx.stat(base, FIXED_MODE, r, t), ctx.stat(other, FIXED_MODE, r, t)
            cells.append(Cell(_fixed(a.mean - b.mean, ctx.digits) if a and b else MISSING))
        rows.append(cells)
    return Panel(title, ["train \\ test", *map(str, columns)], rows)


def san_table7(runs, commands=(), digits=2) -> Table:
    """SAN trained at its largest resolution across test resolutions; FixRes-tagged runs added as rows."""
    table, ctx = _new_table("san_table7", "SAN Table 7: SAN row trained at the largest resolution across test "
                            "resolutions (and FixRes, when runs tagged 'fixres' exist)", runs, commands, digits)
    fixres = ctx.runs[ctx.runs["params.tag"] == "fixres"]
    ctx.runs = ctx.runs[ctx.runs["params.tag"] != "fixres"]
    for backbone in backbones(pd.concat([ctx.runs, fixres])):
        san = ctx.pick(SAN, backbone)
        fix_groups = seed_groups(fixres[fixres["params.model.backbone"] == backbone])
        if san is None and not fix_groups:
            continue
        if san is None:
            ctx.notes.missing(f"SAN {backbone}")
        rows = [MatrixRow(f"SAN (train {max(training_resolutions(san))})" if san is not None else "SAN",
                          san, max(training_resolutions(san)) if san is not None else 0, f"SAN {backbone}")]
        for group in fix_groups:
            largest = max(resolutions_of(group.iloc[0]))
            rows.append(MatrixRow(f"FixRes {group['params.method.name'].iloc[0]} (train {largest})", group, largest,
                                  f"FixRes {backbone}"))
        panel = matrix_panel(ctx, f"{backbone} — top-1 %", rows, _columns(san, *fix_groups))
        panel.header[0] = "model \\ test"
        if fix_groups:
            _mark_column_best(panel)
        table.panels.append(panel)
    if len(fixres):
        table.legend.append("**bold** = the better result at each test resolution")
    return _finish(table, ctx)


def _mark_column_best(panel: Panel) -> None:
    for j in range(1, len(panel.header)):
        numbers = [(float(row[j].text.split(" ")[0]), row[j]) for row in panel.rows if row[j].text != MISSING]
        best = max((n for n, _ in numbers), default=None)
        for number, cell in numbers:
            cell.marked = number == best
    panel.heatmap = None


# --------------------------------------------------------------------------------------------
# RS-Nets tables


def _top1_top5(ctx: Context, group, r: int, base: Stat | None, show_gain: bool = True) -> Cell:
    top1, top5 = ctx.stat(group, FIXED_MODE, r, r), ctx.stat(group, FIXED_MODE, r, r, "top5")
    if top1 is None:
        return missing_cell()
    text = f"{top1.text(ctx.digits)} / {ctx.text(top5)}"
    if show_gain and base is not None:
        text += f" ({_signed(top1.mean - base.mean, ctx.digits)})"
    return Cell(text)


def _top1_delta(ctx: Context, group, r: int, base: Stat | None, show_delta: bool = True) -> Cell:
    top1 = ctx.stat(group, FIXED_MODE, r, r)
    if top1 is None:
        return missing_cell()
    text = top1.text(ctx.digits)
    return Cell(text + (f" ({_signed(top1.mean - base.mean, ctx.digits)})" if show_delta and base else ""))


def _first_run(*groups) -> pd.Series | None:
    return next((g.iloc[0] for g in groups if g is not None), None)


def _resolution_label(r: int) -> str:
    return f"{r}×{r}"


def table2_panel(ctx: Context, backbone: str, with_san: bool = False) -> Panel | None:
    """RS-Nets Table 2 for one backbone: MAdds, I-Nets, I-{max}, Parallel, RS-Net (and SAN), with gains."""
    inets = ctx.inet_set(backbone)
    models = [(PARALLEL, ctx.pick(PARALLEL, backbone)), (RSNET, ctx.pick(RSNET, backbone))]
    if with_san:
        models.append((SAN, ctx.pick(SAN, backbone)))
    if inets is None and all(g is None for _, g in models):
        return None
    train = sorted(set(training_resolutions(*(g for _, g in models))) | set(inet_resolutions(inets)), reverse=True)
    largest = max(train)
    i_max = inet_row(inets, largest)
    any_run = _first_run(inets, *(g for _, g in models))
    madds = describe_run(any_run, ctx.notes, method="individual", resolutions=train)["madds"]
    rows = []
    for r in train:
        base_group = inet_row(inets, r)
        base = ctx.stat(base_group, FIXED_MODE, r, r)
        if base_group is None:
            ctx.notes.missing(f"I-Nets {backbone} r={r}" if inets is not None else f"I-Nets {backbone}")
        cells = [Cell(_resolution_label(r)), Cell(madds_text(madds, r)),
                 _top1_top5(ctx, base_group, r, None), _i_max_cell(ctx, i_max, largest, r, base)]
        cells += [_top1_top5(ctx, group, r, base) for _, group in models]
        rows.append(cells)
    for model, group in models:
        if group is None:
            ctx.notes.missing(f"{model.label} {backbone}")
    rows.append(_total_params_row(ctx, inets, i_max, models, train))
    header = ["Resolution", "MAdds", "I-Nets (base)", f"I-{largest}", *(m.label for m, _ in models)]
    return Panel(f"{backbone} — top-1 / top-5 % (top-1 gain over I-Nets)", header, rows)


def _i_max_cell(ctx: Context, i_max, largest: int, r: int, base: Stat | None) -> Cell:
    """The I-Net trained at the largest resolution, tested at r (no gain on its own row)."""
    top1, top5 = ctx.stat(i_max, FIXED_MODE, largest, r), ctx.stat(i_max, FIXED_MODE, largest, r, "top5")
    if top1 is None:
        return missing_cell()
    gain = f" ({_signed(top1.mean - base.mean, ctx.digits)})" if base is not None and r != largest else ""
    return Cell(f"{top1.text(ctx.digits)} / {ctx.text(top5)}{gain}")


def _total_params_row(ctx: Context, inets, i_max, models, train: list[int]) -> list[Cell]:
    """Counted as ``resolab describe`` does: I-Nets = every individual model, I-{max} = one, others = the method."""
    cells = [Cell("Total Params"), Cell("")]
    if inets is not None:
        cells.append(Cell(params_text(describe_run(inets.iloc[0], ctx.notes, "individual", train))))
    else:
        cells.append(missing_cell())
    if i_max is not None:
        cells.append(Cell(params_text(describe_run(i_max.iloc[0], ctx.notes, "individual", [max(train)]))))
    else:
        cells.append(missing_cell())
    for _, group in models:
        cells.append(Cell(params_text(describe_run(group.iloc[0], ctx.notes))) if group is not None else missing_cell())
    return cells


def rsnets_table2(runs, commands=(), digits=1) -> Table:
    table, ctx = _new_table("rsnets_table2", "RS-Nets Table 2: top-1 / top-5 (%), top-1 gain over I-Nets, MAdds and "
                            "total params (2^20 units)", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        panel = table2_panel(ctx, backbone)
        table.panels += [panel] if panel else []
    return _finish(table, ctx)


MRED_VARIANTS = (("full", "Full-version MRED (base)"), ("vanilla", "Vanilla-version MRED"),
                 ("from_models", "Only from p1…p(S-1)"), ("from_largest", "Only from p1"))


def rsnets_table5(runs, commands=(), digits=1) -> Table:
    table, ctx = _new_table("rsnets_table5", "RS-Nets Table 5: top-1 (%) of MRED variants, change vs full-version",
                            runs, commands, digits)
    for backbone in backbones(ctx.runs):
        variants = [(label, ctx.pick(rsnet_variant(label, distill), backbone)) for distill, label in MRED_VARIANTS]
        table.panels += _delta_panel(ctx, backbone, variants, "distill")
    return _finish(table, ctx)


def _delta_panel(ctx: Context, backbone: str, variants, what: str, train: list[int] | None = None) -> list[Panel]:
    """Rows = training resolutions, one column per variant, the first is the base of the deltas."""
    if all(g is None for _, g in variants):
        return []
    train = train or training_resolutions(*(g for _, g in variants))
    for label, group in variants:
        if group is None:
            ctx.notes.missing(f"RS-Net {backbone} {label}")
    rows = []
    for r in train:
        base = ctx.stat(variants[0][1], FIXED_MODE, r, r)
        rows.append([Cell(_resolution_label(r)), *(_top1_delta(ctx, g, r, base, show_delta=i > 0)
                                                   for i, (_, g) in enumerate(variants))])
    return [Panel(f"{backbone} — top-1 % ({what} variants, change vs base)", ["Resolution", *(l for l, _ in variants)],
                  rows)]


def rsnets_table6(runs, commands=(), digits=1) -> Table:
    """Multi- vs single-resolution and single- vs multi-crop; single-res value at r = the job trained on [r]*k."""
    table, ctx = _new_table("rsnets_table6", "RS-Nets Table 6: multi-resolution and single-crop vs their ablations, "
                            "top-1 (%), change vs base", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        base = ctx.pick(rsnet_variant("multi-res single-crop"), backbone)
        multi_crop = ctx.pick(rsnet_variant("multi-res multi-crop", crop="multi"), backbone)
        single = {crop: _single_res_groups(ctx, backbone, crop) for crop in ("multi", "single")}
        train = training_resolutions(base, multi_crop) or sorted({r for g in single.values() for r in g}, reverse=True)
        if not train:
            continue
        columns = [("Multi-res single-crop (base)", lambda r: base), ("Multi-res multi-crop", lambda r: multi_crop),
                   ("Single-res multi-crop", lambda r: single["multi"].get(r)),
                   ("Single-res single-crop", lambda r: single["single"].get(r))]
        table.panels.append(_table6_panel(ctx, backbone, train, columns))
    return _finish(table, ctx)


def _single_res_groups(ctx: Context, backbone: str, crop: str) -> dict[int, pd.DataFrame]:
    """Resolution -> seeds of the RS-Net trained on k copies of that resolution."""
    model = rsnet_variant(f"single-res {crop}-crop", crop=crop, kind="single")
    runs = match(ctx.runs, model.criteria(backbone), lambda res: resolution_kind(res) == "single")
    resolutions = sorted({resolutions_of(run)[0] for _, run in runs.iterrows()}, reverse=True)
    return {r: ctx.pick(model, backbone, lambda res, r=r: res[0] == r) for r in resolutions}


def _table6_panel(ctx: Context, backbone: str, train: list[int], columns) -> Panel:
    rows = []
    for r in train:
        base = ctx.stat(columns[0][1](r), FIXED_MODE, r, r)
        cells = [Cell(_resolution_label(r))]
        for i, (label, group_at) in enumerate(columns):
            group = group_at(r)
            if group is None:
                ctx.notes.missing(f"RS-Net {backbone} {label}" + (f" r={r}" if label.startswith("Single") else ""))
            cells.append(_top1_delta(ctx, group, r, base, show_delta=i > 0))
        rows.append(cells)
    k = len(train)
    rows.append([Cell("Model Size"), Cell("1×"), Cell("1×"), Cell(f"{k}×"), Cell(f"{k}×")])
    return Panel(f"{backbone} — top-1 % (change vs base)", ["Resolution", *(label for label, _ in columns)], rows)


def rsnets_fig4(runs, commands=(), digits=1) -> Table:
    """Left: parallel shared vs private BN, I-Nets, RS-Net. Right: RS-Net (interpolated BN) vs each I-Net."""
    table, ctx = _new_table("rsnets_fig4", "RS-Nets Fig. 4: (left) shared vs private BN in parallel training; "
                            "(right) RS-Net with interpolated BN vs every I-Net at dense test resolutions",
                            runs, commands, digits)
    for backbone in backbones(ctx.runs):
        models = [(PARALLEL_SHARED_BN.label, ctx.pick(PARALLEL_SHARED_BN, backbone)),
                  ("Parallel (private BN)", ctx.pick(PARALLEL, backbone)), ("RS-Net", ctx.pick(RSNET, backbone))]
        inets = ctx.inet_set(backbone)
        if inets is None and all(g is None for _, g in models):
            continue
        left, left_curves = _fig4_left(ctx, backbone, models, inets)
        right, right_curves = _fig4_right(ctx, backbone, dict(models)["RS-Net"], inets)
        table.panels += [left, right]
        table.figures[f"fig4_{backbone}"] = functools.partial(plots.rsnets_fig4, left_curves, right_curves,
                                                               f"RS-Nets Fig. 4 — {backbone}")
    return _finish(table, ctx)


def _fig4_left(ctx, backbone, models, inets):
    columns = [models[0], models[1], ("I-Nets", None), models[2]]
    train = sorted(set(training_resolutions(*(g for _, g in models))) | set(inet_resolutions(inets)), reverse=True)
    for label, group in models:
        if group is None:
            ctx.notes.missing(f"{label} {backbone}")
    rows, curves = [], {label: Points(label) for label, _ in columns}
    for r in train:
        cells = [Cell(_resolution_label(r))]
        for label, group in columns:
            group = inet_row(inets, r) if label == "I-Nets" else group
            stat = ctx.stat(group, FIXED_MODE, r, r)
            cells.append(Cell(ctx.text(stat)))
            curves[label].add(r, stat)
        rows.append(cells)
    return (Panel(f"{backbone} — left: top-1 % at the training resolutions", ["Resolution", *(l for l, _ in columns)], rows),
            [c.curve(dashed=c.label == "I-Nets") for c in curves.values()])


def _fig4_right(ctx, backbone, rsnet, inets):
    inet_res = inet_resolutions(inets)
    tests = _columns(rsnet, mode="interp") or _columns(rsnet)
    tests = sorted(set(tests) | set(_columns(*(inet_row(inets, r) for r in inet_res))), reverse=True)
    if rsnet is not None and not test_columns(rsnet, "interp"):
        ctx.notes.not_evaluated(f"RS-Net {backbone} interp mode", tests)
    columns = [("RS-Net (interp BN)", rsnet, "interp", 0)] + [(f"I-{r}", inet_row(inets, r), FIXED_MODE, r) for r in inet_res]
    curves = {label: Points(label) for label, *_ in columns}
    rows = []
    for t in tests:
        cells = [Cell(str(t))]
        for label, group, mode, row in columns:
            stat = ctx.stat(group, mode, row, t)
            cells.append(Cell(ctx.text(stat)))
            curves[label].add(t, stat)
        rows.append(cells)
    return (Panel(f"{backbone} — right: top-1 % at dense test resolutions", ["Test", *(c[0] for c in columns)], rows),
            [c.curve(dashed=c.label.startswith("I-")) for c in curves.values()])


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


def fig1(runs, commands=(), digits=1) -> Table:
    """Both Fig. 1s: SAN vs I-Nets accuracy across test resolutions, and top-1 vs MAdds."""
    table, ctx = _new_table("fig1", "Fig. 1: accuracy vs test resolution (SAN) and top-1 vs MAdds (RS-Nets)",
                            runs, commands, digits)
    for backbone in backbones(ctx.runs):
        panel = _fig1_panel(ctx, table, backbone)
        table.panels += [panel] if panel else []
    return _finish(table, ctx)


def _fig1_panel(ctx: Context, table: Table, backbone: str) -> Panel | None:
    inets = ctx.inet_set(backbone)
    models = [("Parallel", ctx.pick(PARALLEL, backbone)), ("RS-Net", ctx.pick(RSNET, backbone)),
              ("SAN", ctx.pick(SAN, backbone))]
    if inets is None and all(g is None for _, g in models):
        return None
    for label, group in [("I-Nets", inets), *models]:
        if group is None:
            ctx.notes.missing(f"{label} {backbone}")
    train = sorted(set(training_resolutions(*(g for _, g in models))) | set(inet_resolutions(inets)), reverse=True)
    madds = describe_run(_first_run(inets, *(g for _, g in models)), ctx.notes, "individual", train)["madds"]
    columns = [("I-Nets", None)] + models
    rows, madds_curves = [], {label: Points(label) for label, _ in columns}
    for r in train:
        cells = [Cell(_resolution_label(r)), Cell(madds_text(madds, r))]
        for label, group in columns:
            stat = ctx.stat(inet_row(inets, r) if label == "I-Nets" else group, FIXED_MODE, r, r)
            cells.append(Cell(ctx.text(stat)))
            if str(r) in madds:
                madds_curves[label].add(madds[str(r)], stat)
        rows.append(cells)
    right = [c.curve(dashed=c.label == "I-Nets") for c in madds_curves.values() if c.x]
    left = _resolution_curves(ctx, dict(models)["SAN"], inets, train)
    table.figures[f"fig1_{backbone}"] = functools.partial(plots.fig1, left, right, f"Fig. 1 — {backbone}")
    return Panel(f"{backbone} — top-1 % at the training resolutions (points of the MAdds plot)",
                 ["Resolution", "MAdds", *(l for l, _ in columns)], rows)


def _resolution_curves(ctx: Context, san, inets, train: list[int]) -> list[plots.Curve]:
    """SAN Fig. 1: one curve per training row, SAN solid and I-Nets dashed in the same colour."""
    curves = []
    for r in train:
        for label, group, dashed in ((f"SAN {r}", san, False), (f"I-{r}", inet_row(inets, r), True)):
            line = Points(label)
            for t in sorted(test_columns(group)):
                line.add(t, value(group, FIXED_MODE, r, t))
            if line.x:
                curves.append(line.curve(dashed=dashed, color_key=r, highlight_x=[r]))
    return curves


def quickstart(runs, commands=(), digits=1) -> Table:
    """What a new user sees after the quickstart: RS-Nets Table 2 with a SAN column, then the
    SAN Table 1 matrices of the I-Nets and of SAN."""
    table, ctx = _new_table("quickstart", "Quickstart: I-Nets vs Parallel, RS-Net and SAN (RS-Nets Table 2 layout), "
                            "then the train x test matrices (SAN Table 1 layout)", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        panel = table2_panel(ctx, backbone, with_san=True)
        if panel is None:
            continue
        table.panels.append(panel)
        matrix_ctx = Context(ctx.runs, ctx.notes, max(digits, 2))
        table.panels += _san_vs_inets_panels(matrix_ctx, backbone)
        _fig1_panel(ctx, table, backbone)  # for its figure only
    return _finish(table, ctx, proxy_legend=True)


# --------------------------------------------------------------------------------------------
# Rendering


def to_markdown(table: Table) -> str:
    out = [f"### {table.title}", ""]
    for panel in table.panels:
        out += [f"**{panel.title}**", "", _md_row(panel.header), "|" + "|".join(["---"] + ["---:"] * (len(panel.header) - 1)) + "|"]
        out += [_md_row([f"**{c.text}**" if c.marked and c.text != MISSING else c.text for c in row]) for row in panel.rows]
        out.append("")
    out += table.legend
    out += table.notes
    return "\n".join(out).rstrip() + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


_LATEX_REPLACEMENTS = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                       ("±", r"$\pm$"), ("—", "---"), ("×", r"$\times$"), ("…", r"\ldots{}"), ("^", r"\^{}"))


def latex_escape(text: str) -> str:
    for old, new in _LATEX_REPLACEMENTS:
        text = text.replace(old, new)
    return text


def to_latex(table: Table) -> str:
    out = [f"% {table.name}: {_comment(table.title)}", r"% needs \usepackage{booktabs}"]
    for panel in table.panels:
        out += [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(table.title)} --- {latex_escape(panel.title)}}}",
                rf"\begin{{tabular}}{{l{'r' * (len(panel.header) - 1)}}}", r"\toprule",
                " & ".join(latex_escape(h) for h in panel.header) + r" \\", r"\midrule"]
        for row in panel.rows:
            out.append(" & ".join(rf"\textbf{{{latex_escape(c.text)}}}" if c.marked and c.text != MISSING
                                  else latex_escape(c.text) for c in row) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    out += [f"% {_comment(line)}" for line in table.legend + table.notes]
    return "\n".join(out).rstrip() + "\n"


def _comment(line: str) -> str:
    """A note as a LaTeX comment: ASCII, so any engine reads the file; commands stay copy-pasteable."""
    return line.replace("**bold**", "bold").replace("—", "--").replace("±", "+/-").replace("×", "x")


CSV_HEADER = ["table", "panel", "row", "column", "value", "marked"]


def to_csv(table: Table, header: bool = True) -> str:
    """Long form, one line per cell (panels have different columns); notes are not part of it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(CSV_HEADER)
    for panel in table.panels:
        for row in panel.rows:
            for column, cell in zip(panel.header[1:], row[1:]):
                writer.writerow([table.name, panel.title, row[0].text, column, cell.text, int(cell.marked)])
    return buffer.getvalue()


RENDERERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}


def render(table: Table, fmt: str = "md") -> str:
    return RENDERERS[fmt](table)
