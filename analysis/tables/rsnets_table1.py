"""RS-Nets Table 1: the share of validation images classified correctly at one resolution and wrongly
at another, for individual training (I-Nets), parallel training and parallel training + MRED (RS-Net).

Cell (row ×, column ✓) = % of images right at the column's resolution and wrong at the row's, each
model at its own training resolutions (the fixed mode's diagonal; I-Nets: each I-Net at its own
resolution), from the runs' per-image predictions. Lower is better. The paper's three blocks are three
panels per backbone; it colours red what is larger than under individual training, here bold.
The models are those of RS-Nets Table 2, so the table reads that suite's runs.
"""
from __future__ import annotations

import pandas as pd

from analysis.predictions import cell_correct, paired
from analysis.report import FIXED_MODE
from analysis.tables.runs import SEED_KEY, backbones, inet_resolutions, inet_row, training_resolutions
from analysis.tables.builder import PARALLEL, RSNET, Context, finish_table, new_table
from analysis.tables.model import MISSING, Cell, Panel, Stat, Table, format_fixed

DIAGONAL = "-"
WORSE_LEGEND = ("**bold** = larger than under individual training (the base), i.e. more images lost at the row's "
                "resolution (red in the paper)")

Correct = dict[str, dict[int, pd.DataFrame]]  # seed -> training resolution -> correctness frame


def rsnets_table1(runs, commands=(), digits=1, *, predictions=None) -> Table:
    """``predictions``: run id -> the run's per-image predictions frame, or None when it has none."""
    table, ctx = new_table("rsnets_table1", "RS-Nets Table 1: % of validation images right at one resolution "
                           "(column) and wrong at another (row); lower is better", runs, commands, digits, predictions)
    for backbone in backbones(ctx.runs):
        inets, parallel, rsnet = ctx.inet_set(backbone), ctx.pick(PARALLEL, backbone), ctx.pick(RSNET, backbone)
        if inets is None and parallel is None and rsnet is None:
            continue
        train = sorted(set(training_resolutions(parallel, rsnet)) | set(inet_resolutions(inets)), reverse=True)
        blocks = [("Individual training (base)", f"I-Nets {backbone}", inets, _inet_correct(ctx, inets, train)),
                  ("Parallel training", f"Parallel {backbone}", parallel, _model_correct(ctx, parallel, train)),
                  ("Parallel training + MRED", f"RS-Net {backbone}", rsnet, _model_correct(ctx, rsnet, train))]
        base = None
        for label, what, group, correct in blocks:
            if group is None:
                ctx.notes.missing(what)
            elif not correct:
                ctx.notes.add(f"missing: per-image predictions (matrix/predictions.parquet) of {what} — its runs "
                              "were recorded without them")
            shares = _shares(ctx, correct, train)
            table.panels.append(_panel(ctx, f"{backbone} — {label}", train, shares, base))
            base = shares if base is None else base
    if any(c.marked for p in table.panels for row in p.rows for c in row):
        table.legend.append(WORSE_LEGEND)
    return finish_table(table, ctx)


def _seed(run: pd.Series) -> str:
    return str(run.get(f"params.{SEED_KEY}", "0"))


def _model_correct(ctx: Context, group, train: list[int]) -> Correct:
    """Each seed's correctness at each of its training resolutions (fixed mode, row r, test r)."""
    found: Correct = {}
    for _, run in (group.iterrows() if group is not None else ()):
        frame = ctx.predictions(run["run_id"]) if ctx.predictions else None
        for r in train:
            correct = cell_correct(frame, (FIXED_MODE, r, r))
            if correct is not None:
                found.setdefault(_seed(run), {})[r] = correct
    return found


def _inet_correct(ctx: Context, inets, train: list[int]) -> Correct:
    """Per seed, each I-Net at its own resolution: the seed's I-Nets together play one model."""
    found: Correct = {}
    for r in train:
        for seed, at_r in _model_correct(ctx, inet_row(inets, r), [r]).items():
            found.setdefault(seed, {}).update(at_r)
    return found


def _shares(ctx: Context, correct: Correct, train: list[int]) -> dict[tuple[int, int], Stat]:
    """(wrong at x, right at c) -> % of images, a Stat over the seeds that have both resolutions."""
    shares = {}
    for x in train:
        for c in train:
            values = []
            for at in correct.values():
                pair = paired(at.get(c), at.get(x)) if x != c else None
                if pair is not None:
                    right_at_c, right_at_x = pair
                    values.append(100.0 * float((right_at_c * (1.0 - right_at_x)).mean()))
            if values:
                shares[(x, c)] = ctx.notes.seen(Stat(tuple(values)))
    return shares


def _panel(ctx: Context, title: str, train: list[int], shares: dict, base: dict | None) -> Panel:
    rows = []
    for x in train:
        cells = [Cell(str(x))]
        for c in train:
            stat = shares.get((x, c))
            if x == c:
                cells.append(Cell(DIAGONAL))
            elif stat is None:
                cells.append(Cell(MISSING))
            else:
                cells.append(Cell(ctx.text(stat), marked=_worse(ctx, stat, (base or {}).get((x, c)))))
        rows.append(cells)
    return Panel(title, ["wrong \\ right", *map(str, train)], rows)


def _worse(ctx: Context, stat: Stat, base: Stat | None) -> bool:
    """Larger than the base as printed (the paper's red numbers)."""
    return base is not None and float(format_fixed(stat.mean, ctx.digits)) > float(format_fixed(base.mean, ctx.digits))
