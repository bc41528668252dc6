"""The SAN paper's Tables 1-7: train x test matrices of top-1 % with the proxy-inference cells S(T)
marked (Table 5: the drop from the linear meta network to an MLP; Table 7: the best of each column)."""
from __future__ import annotations

from analysis import published
from analysis.report import FIXED_MODE
from analysis.tables.runs import backbones, inet_resolutions, test_columns_of, training_resolutions
from analysis.tables.builder import (SAN, SAN_NO_SD, SAN_NO_SD_SHARED_BN, SAN_PRIVATE_CONVS, Context, MatrixRow, Model,
                                    finish_table, inet_rows, matrix_panel, model_rows, new_table, san_mlp)
from analysis.tables.model import MISSING, Cell, Panel, Table, format_fixed


def san_vs_inets_panels(ctx: Context, backbone: str, san_model: Model = SAN) -> list[Panel]:
    """SAN Table 1 / 6 layout for one backbone: I-Nets matrix beside the SAN matrix."""
    inets, san = ctx.inet_set(backbone), ctx.pick(san_model, backbone)
    if inets is None and san is None:
        return []
    train = sorted(set(training_resolutions(san)) | set(inet_resolutions(inets)), reverse=True)
    columns = test_columns_of(san, inets)
    return [matrix_panel(ctx, f"{backbone} — I-Nets (top-1 %)", inet_rows(inets, train, backbone), columns),
            matrix_panel(ctx, f"{backbone} — {san_model.label} (top-1 %, fixed rows)",
                         model_rows(san, train, f"{san_model.label} {backbone}"), columns,
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
                                   model_rows(group, train, f"{model.label} {backbone}"), test_columns_of(group),
                                   proxy_of=train))
    return panels


def san_table1(runs, commands=(), digits=2, *, name="san_table1",
               title="SAN Table 1: I-Nets (left) vs SAN (right), top-1 % on a spectrum of test resolutions") -> Table:
    table, ctx = new_table(name, title, runs, commands, digits)
    for backbone in backbones(ctx.runs):
        table.panels += san_vs_inets_panels(ctx, backbone)
    return finish_table(table, ctx, proxy_legend=True)


def san_table6(runs, commands=(), digits=2) -> Table:
    return san_table1(runs, commands, digits, name="san_table6",
                      title="SAN Table 6: I-Nets (top) vs SAN (bottom) at large training resolutions, top-1 %")


def san_table2(runs, commands=(), digits=2) -> Table:
    """SAN at test resolutions that are not training resolutions: ideal, ideal + BN calibration, proxy."""
    table, ctx = new_table("san_table2", "SAN Table 2: SAN at test resolutions outside the training set — ideal "
                           "inference before / after BN calibration, and proxy inference", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        san = ctx.pick(SAN, backbone)
        if san is None:
            continue
        train = training_resolutions(san)
        columns = [t for t in test_columns_of(san, mode="ideal_calib") or test_columns_of(san) if t not in train]
        rows = model_rows(san, train, f"SAN {backbone}")
        for mode, label in (("ideal", "ideal inference, before BN calibration"),
                            ("ideal_calib", "ideal inference, after BN calibration"),
                            (FIXED_MODE, "proxy inference (fixed rows)")):
            table.panels.append(matrix_panel(ctx, f"{backbone} — {label}", rows, columns, mode=mode, proxy_of=train))
    return finish_table(table, ctx, proxy_legend=True)


def san_table3(runs, commands=(), digits=2) -> Table:
    table, ctx = new_table("san_table3", "SAN Table 3: SAN w/o scale distillation (left) and w/o SD + shared BN "
                           "(right), top-1 %", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        table.panels += _model_matrix_panels(ctx, backbone, [SAN_NO_SD, SAN_NO_SD_SHARED_BN])
    return finish_table(table, ctx, proxy_legend=True)


def san_table4(runs, commands=(), digits=2) -> Table:
    table, ctx = new_table("san_table4", "SAN Table 4: parallel models with privatized convolutions per resolution "
                           "(+ scale distillation), top-1 %", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        table.panels += _model_matrix_panels(ctx, backbone, [SAN_PRIVATE_CONVS])
    return finish_table(table, ctx, proxy_legend=True)


def san_table5(runs, commands=(), digits=2) -> Table:
    """Accuracy drop (linear meta net − MLP meta net), cell-wise; negative = the MLP is better."""
    table, ctx = new_table("san_table5", "SAN Table 5: top-1 drop of SAN with an MLP meta network (8 / 16 hidden) "
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
    return finish_table(table, ctx)


def _drop_panel(ctx: Context, title: str, base, other) -> Panel:
    train = training_resolutions(base, other)
    if base is not None and other is not None:
        columns = sorted(set(test_columns_of(base)) & set(test_columns_of(other)), reverse=True)
    else:
        columns = test_columns_of(*(g for g in (base, other) if g is not None))
    rows = []
    for r in train:
        cells = [Cell(str(r))]
        for t in columns:
            a, b = ctx.stat(base, FIXED_MODE, r, t), ctx.stat(other, FIXED_MODE, r, t)
            cells.append(Cell(format_fixed(a.mean - b.mean, ctx.digits) if a and b else MISSING))
        rows.append(cells)
    return Panel(title, ["train \\ test", *map(str, columns)], rows)


def san_table7(runs, commands=(), digits=2) -> Table:
    """SAN trained at its largest resolution across test resolutions, beside the published FixRes row."""
    table, ctx = new_table("san_table7", "SAN Table 7: SAN row trained at the largest resolution across test "
                           "resolutions, and FixRes as published", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        san = ctx.pick(SAN, backbone)
        if san is None:
            continue
        largest = max(training_resolutions(san))
        rows = [MatrixRow(f"SAN (train {largest})", san, largest, f"SAN {backbone}")]
        panel = matrix_panel(ctx, f"{backbone} — top-1 %", rows, test_columns_of(san))
        panel.header[0] = "model \\ test"
        quoted = published.rows("SAN", "Table 7", backbone)
        for row in quoted:
            panel.rows.append(_published_row(row, panel.header[1:]))
            ctx.notes.add(row.footnote())
        if quoted:
            _mark_column_best(panel)
            table.legend = ["**bold** = the better result at each test resolution"]
        table.panels.append(panel)
    return finish_table(table, ctx)


def _published_row(row: published.Published, columns: list[str]) -> list[Cell]:
    """As published (one decimal for FixRes), not at the table's --digits: a quoted number gains no digits."""
    texts = [row.text(int(column)) for column in columns]
    return [Cell(row.label), *(Cell(MISSING if t is None else t) for t in texts)]


def _mark_column_best(panel: Panel) -> None:
    for j in range(1, len(panel.header)):
        numbers = [(float(row[j].text.split(" ")[0]), row[j]) for row in panel.rows if row[j].text != MISSING]
        best = max((n for n, _ in numbers), default=None)
        for number, cell in numbers:
            cell.marked = number == best
    panel.heatmap = None
