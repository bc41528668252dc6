"""Tables that draw on both papers: Fig. 1 (SAN's accuracy across test resolutions, RS-Nets' top-1 vs
MAdds) and the quickstart overview."""
from __future__ import annotations

import functools

from analysis import plots, published
from analysis.tables.model_size import describe_run, madds_text
from analysis.report import FIXED_MODE
from analysis.tables.rsnets_table3 import full_precision, networks, quantized, quantized_fig1_points
from analysis.tables.rsnets import table2_panel
from analysis.tables.runs import (backbones, inet_resolutions, inet_row, resolutions_of, test_columns, training_resolutions,
                           value)
from analysis.tables.san import san_vs_inets_panels
from analysis.tables.builder import (PARALLEL, RSNET, SAN, Context, Points, finish_table, first_run, new_table,
                                    resolution_label)
from analysis.tables.model import Cell, Panel, Table


def fig1(runs, commands=(), digits=1) -> Table:
    """Both Fig. 1s: SAN vs I-Nets accuracy across test resolutions, and top-1 vs MAdds."""
    table, ctx = new_table("fig1", "Fig. 1: accuracy vs test resolution (SAN) and top-1 vs MAdds (RS-Nets)",
                           runs, commands, digits)
    # Quantized models (RS-Nets Table 3) are points of their own, never picked as a full-precision model.
    full = Context(full_precision(ctx.runs), ctx.notes, digits)
    low_bits = Context(quantized(ctx.runs), ctx.notes, digits)
    for backbone in dict.fromkeys([*backbones(full.runs), *networks(low_bits.runs)]):
        madds = _madds_of(full, backbone) or _madds_of(low_bits, backbone)
        extra_panel, extra = quantized_fig1_points(low_bits, backbone, madds)
        panel = _fig1_panel(full, table, backbone, extra)
        table.panels += [p for p in (panel, extra_panel) if p]
    return finish_table(table, ctx)


def _madds_of(ctx: Context, backbone: str) -> dict:
    """MAdds at the training resolutions of ``backbone``'s (or its pre-activation twin's) runs."""
    runs = ctx.runs[ctx.runs["params.model.backbone"].isin([backbone, f"preact_{backbone}"])] if len(ctx.runs) else ctx.runs
    if runs.empty:
        return {}
    train = sorted({r for _, run in runs.iterrows() for r in resolutions_of(run)}, reverse=True)
    return describe_run(runs.iloc[0], ctx.notes, "individual", train)["madds"]


def _fig1_panel(ctx: Context, table: Table, backbone: str, extra_right=()) -> Panel | None:
    """``extra_right``: more curves for the MAdds plot (the quantized points)."""
    inets = ctx.inet_set(backbone)
    models = [("Parallel", ctx.pick(PARALLEL, backbone)), ("RS-Net", ctx.pick(RSNET, backbone)),
              ("SAN", ctx.pick(SAN, backbone))]
    if inets is None and all(g is None for _, g in models):
        if extra_right:
            table.figures[f"fig1_{backbone}"] = functools.partial(plots.fig1, [], list(extra_right),
                                                                   f"Fig. 1 — {backbone}")
        return None
    for label, group in [("I-Nets", inets), *models]:
        if group is None:
            ctx.notes.missing(f"{label} {backbone}")
    train = sorted(set(training_resolutions(*(g for _, g in models))) | set(inet_resolutions(inets)), reverse=True)
    madds = describe_run(first_run(inets, *(g for _, g in models)), ctx.notes, "individual", train)["madds"]
    columns = [("I-Nets", None)] + models
    rows, madds_curves = [], {label: Points(label) for label, _ in columns}
    for r in train:
        cells = [Cell(resolution_label(r)), Cell(madds_text(madds, r))]
        for label, group in columns:
            stat = ctx.stat(inet_row(inets, r) if label == "I-Nets" else group, FIXED_MODE, r, r)
            cells.append(Cell(ctx.text(stat)))
            if str(r) in madds:
                madds_curves[label].add(madds[str(r)], stat)
        rows.append(cells)
    right = [c.curve(dashed=c.label == "I-Nets") for c in madds_curves.values() if c.x]
    right += _published_width_curves(ctx, first_run(inets, *(g for _, g in models)), backbone, max(train))
    right += list(extra_right)
    left = _resolution_curves(ctx, dict(models)["SAN"], inets, train)
    table.figures[f"fig1_{backbone}"] = functools.partial(plots.fig1, left, right, f"Fig. 1 — {backbone}")
    return Panel(f"{backbone} — top-1 % at the training resolutions (points of the MAdds plot)",
                 ["Resolution", "MAdds", *(l for l, _ in columns)], rows)


def _published_width_curves(ctx: Context, run, backbone: str, resolution: int) -> list[plots.Curve]:
    """RS-Nets Fig. 1's width-switchable MobileNetV2s (RS-Nets Table 4's published rows) at the MAdds of
    each width at ``resolution``."""
    curves = []
    for row in published.rows("RS-Nets", "Table 4", backbone):
        points = Points(row.label)
        for width, top1 in row.numbers:
            madds = describe_run(run, ctx.notes, "individual", [resolution], width_mult=width)["madds"]
            if str(resolution) in madds:
                points.x.append(madds[str(resolution)])
                points.y.append(top1)
        if points.x:
            curves.append(points.curve(dashed=True))
            ctx.notes.add(row.footnote().replace("Table 4", "Table 4 and Fig. 1"))
    return curves


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


def quickstart(runs, commands=(), digits=1, *, predictions=None, ci=None) -> Table:
    """What a new user sees after the quickstart: RS-Nets Table 2 with a SAN column, then the
    SAN Table 1 matrices of the I-Nets and of SAN. ``predictions`` and ``ci``: as ``rsnets_table2``."""
    table, ctx = new_table("quickstart", "Quickstart: I-Nets vs Parallel, RS-Net and SAN (RS-Nets Table 2 layout), "
                           "then the train x test matrices (SAN Table 1 layout)", runs, commands, digits,
                           predictions, ci)
    for backbone in backbones(ctx.runs):
        # Top-1 only: on the built-in data (10 classes in 5 colour families) every model that sees colour
        # has top-5 near 100 %, so a top-5 column would say nothing; rsnets_table2 renders it for real data.
        panel = table2_panel(ctx, backbone, with_san=True, top5=False)
        if panel is None:
            continue
        ctx.notes.add("Top-5 is left out of this table (near 100 % for every model on the built-in data); "
                      "`make_tables.py rsnets_table2` shows it.")
        table.panels.append(panel)
        matrix_ctx = Context(ctx.runs, ctx.notes, max(digits, 2))
        table.panels += san_vs_inets_panels(matrix_ctx, backbone)
        _fig1_panel(ctx, table, backbone)  # for its figure only
    return finish_table(table, ctx, proxy_legend=True)
