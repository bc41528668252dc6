"""RS-Nets Fig. 5: multi-resolution interaction effects of parallel training (no MRED), ResNet-18.

Each parallel model trained on a set of resolutions is compared, at each of its resolutions r, with the
I-Net trained at r: the cell is the top-1 change (parallel at r) − (I-r at r). Left panel: the pairs
{largest, r}; right panel: the larger sets.
"""
from __future__ import annotations

import functools

from analysis import plots
from analysis.report import FIXED_MODE
from analysis.tables.runs import backbones, inet_row, match, resolution_kind, resolutions_of
from analysis.tables.builder import PARALLEL, Context, Points, finish_table, new_table
from analysis.tables.model import Cell, Panel, Table, format_signed, missing_cell


def rsnets_fig5(runs, commands=(), digits=1) -> Table:
    table, ctx = new_table("rsnets_fig5", "RS-Nets Fig. 5: top-1 change (%) of parallel training over each "
                           "individual model (I-r at r)", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        sets = _training_sets(ctx, backbone)
        inets = ctx.inet_set(backbone)
        if not sets:
            continue
        if inets is None:
            ctx.notes.missing(f"I-Nets {backbone}")
        pairs = [s for s in sets if len(s) == 2]
        larger = [s for s in sets if len(s) > 2]
        panels = [(f"{backbone} — left: two resolutions", pairs), (f"{backbone} — right: more resolutions", larger)]
        curves = []
        for title, chosen in panels:
            if chosen:
                panel, panel_curves = _variation_panel(ctx, backbone, title, chosen, inets)
                table.panels.append(panel)
                curves.append((title, panel_curves))
        table.figures[f"fig5_{backbone}"] = functools.partial(plots.variation_panels, curves,
                                                               f"RS-Nets Fig. 5 — {backbone}")
    return finish_table(table, ctx)


def _training_sets(ctx: Context, backbone: str) -> list[tuple[int, ...]]:
    """Every resolution set a parallel model was trained on: the pairs by their second resolution, then
    the larger sets by size."""
    runs = match(ctx.runs, PARALLEL.criteria(backbone), lambda res: resolution_kind(res) == "multi")
    sets = {tuple(resolutions_of(run)) for _, run in runs.iterrows()}
    return sorted(sets, key=lambda s: (len(s), [-r for r in s]))


def set_label(resolutions: tuple[int, ...]) -> str:
    return "{" + ", ".join(map(str, resolutions)) + "}"


def _variation_panel(ctx: Context, backbone: str, title: str, sets: list[tuple[int, ...]], inets):
    columns = sorted({r for s in sets for r in s}, reverse=True)
    rows, curves = [], []
    for resolutions in sets:
        group = ctx.pick(PARALLEL, backbone, lambda res, s=resolutions: tuple(res) == s,
                         what=f"Parallel {set_label(resolutions)}")
        points = Points(set_label(resolutions))
        cells = [Cell(set_label(resolutions))]
        for r in columns:
            if r not in resolutions:
                cells.append(Cell(""))
                continue
            model, base = ctx.stat(group, FIXED_MODE, r, r), ctx.stat(inet_row(inets, r), FIXED_MODE, r, r)
            if model is None or base is None:
                cells.append(missing_cell())
                continue
            change = model.mean - base.mean
            cells.append(Cell(format_signed(change, ctx.digits)))
            points.x.append(r)
            points.y.append(change)
        rows.append(cells)
        curves.append(points.curve())
    return Panel(title + " (change vs I-Nets)", ["Training resolutions", *map(str, columns)], rows), curves
