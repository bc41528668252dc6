"""The RS-Nets paper's Tables 2, 5 and 6 and Fig. 4: top-1 (and top-5) % of each model at its own
training resolutions, mostly as the change from a base column (the I-Nets, or the full RS-Net); Fig. 4
also tests RS-Net's interpolated BN at dense test resolutions."""
from __future__ import annotations

import functools

import pandas as pd

from analysis import plots
from analysis.tables.model_size import describe_run, madds_text, params_text
from analysis.report import FIXED_MODE
from analysis.tables.runs import (backbones, inet_resolutions, inet_row, match, resolution_kind, resolutions_of, test_columns,
                           test_columns_of, training_resolutions)
from analysis.tables.builder import (PARALLEL, PARALLEL_SHARED_BN, RSNET, SAN, Context, Points, finish_table, first_run,
                                    new_table, resolution_label, rsnet_variant)
from analysis.tables.model import Cell, Panel, Stat, Table, format_signed, missing_cell


def top1_top5_cell(ctx: Context, group, r: int, base: Stat | None, show_gain: bool = True, base_group=None,
               top5: bool = True) -> Cell:
    """Top-1 / top-5 at r (top-1 alone without ``top5``), and the top-1 gain over ``base`` (the I-Net at
    r, whose seeds are ``base_group``)."""
    top1 = ctx.stat(group, FIXED_MODE, r, r)
    if top1 is None:
        return missing_cell()
    text = top1.text(ctx.digits) + (f" / {ctx.text(ctx.stat(group, FIXED_MODE, r, r, 'top5'))}" if top5 else "")
    if show_gain and base is not None:
        text += ctx.gain_text(top1, base, group, (FIXED_MODE, r, r), base_group, (FIXED_MODE, r, r))
    return Cell(text)


def _top1_delta(ctx: Context, group, r: int, base: Stat | None, show_delta: bool = True) -> Cell:
    top1 = ctx.stat(group, FIXED_MODE, r, r)
    if top1 is None:
        return missing_cell()
    text = top1.text(ctx.digits)
    return Cell(text + (f" ({format_signed(top1.mean - base.mean, ctx.digits)})" if show_delta and base else ""))


def table2_panel(ctx: Context, backbone: str, with_san: bool = False, top5: bool = True) -> Panel | None:
    """RS-Nets Table 2 for one backbone: MAdds, I-Nets, I-{max}, Parallel, RS-Net (and SAN), with gains;
    top-1 / top-5 cells, or top-1 alone without ``top5``."""
    inets = ctx.inet_set(backbone)
    models = [(PARALLEL, ctx.pick(PARALLEL, backbone)), (RSNET, ctx.pick(RSNET, backbone))]
    if with_san:
        models.append((SAN, ctx.pick(SAN, backbone)))
    if inets is None and all(g is None for _, g in models):
        return None
    train = sorted(set(training_resolutions(*(g for _, g in models))) | set(inet_resolutions(inets)), reverse=True)
    largest = max(train)
    i_max = inet_row(inets, largest)
    any_run = first_run(inets, *(g for _, g in models))
    madds = describe_run(any_run, ctx.notes, method="individual", resolutions=train)["madds"]
    rows = []
    for r in train:
        base_group = inet_row(inets, r)
        base = ctx.stat(base_group, FIXED_MODE, r, r)
        if base_group is None:
            ctx.notes.missing(f"I-Nets {backbone} r={r}" if inets is not None else f"I-Nets {backbone}")
        cells = [Cell(resolution_label(r)), Cell(madds_text(madds, r)),
                 top1_top5_cell(ctx, base_group, r, None, top5=top5),
                 _i_max_cell(ctx, i_max, largest, r, base, base_group, top5)]
        cells += [top1_top5_cell(ctx, group, r, base, base_group=base_group, top5=top5) for _, group in models]
        rows.append(cells)
    for model, group in models:
        if group is None:
            ctx.notes.missing(f"{model.label} {backbone}")
    rows.append(_total_params_row(ctx, inets, i_max, models, train))
    header = ["Resolution", "MAdds", "I-Nets (base)", f"I-{largest}", *(m.label for m, _ in models)]
    measures = "top-1 / top-5 %" if top5 else "top-1 %"
    return Panel(f"{backbone} — {measures} (top-1 gain over I-Nets)", header, rows)


def _i_max_cell(ctx: Context, i_max, largest: int, r: int, base: Stat | None, base_group=None,
                top5: bool = True) -> Cell:
    """The I-Net trained at the largest resolution, tested at r (no gain on its own row)."""
    top1 = ctx.stat(i_max, FIXED_MODE, largest, r)
    if top1 is None:
        return missing_cell()
    gain = ""
    if base is not None and r != largest:
        gain = ctx.gain_text(top1, base, i_max, (FIXED_MODE, largest, r), base_group, (FIXED_MODE, r, r))
    top5_text = f" / {ctx.text(ctx.stat(i_max, FIXED_MODE, largest, r, 'top5'))}" if top5 else ""
    return Cell(f"{top1.text(ctx.digits)}{top5_text}{gain}")


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


def rsnets_table2(runs, commands=(), digits=1, *, predictions=None, ci=None) -> Table:
    """``predictions`` (run id -> per-image frame) and ``ci`` (a ``Bootstrap``) add intervals to the gains."""
    table, ctx = new_table("rsnets_table2", "RS-Nets Table 2: top-1 / top-5 (%), top-1 gain over I-Nets, MAdds and "
                           "total params (2^20 units)", runs, commands, digits, predictions, ci)
    for backbone in backbones(ctx.runs):
        panel = table2_panel(ctx, backbone)
        table.panels += [panel] if panel else []
    return finish_table(table, ctx)


MRED_VARIANTS = (("full", "Full-version MRED (base)"), ("vanilla", "Vanilla-version MRED"),
                 ("from_models", "Only from p1…p(S-1)"), ("from_largest", "Only from p1"))


def rsnets_table5(runs, commands=(), digits=1) -> Table:
    table, ctx = new_table("rsnets_table5", "RS-Nets Table 5: top-1 (%) of MRED variants, change vs full-version",
                           runs, commands, digits)
    for backbone in backbones(ctx.runs):
        variants = [(label, ctx.pick(rsnet_variant(label, distill), backbone)) for distill, label in MRED_VARIANTS]
        table.panels += _delta_panel(ctx, backbone, variants, "distill")
    return finish_table(table, ctx)


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
        rows.append([Cell(resolution_label(r)), *(_top1_delta(ctx, g, r, base, show_delta=i > 0)
                                                  for i, (_, g) in enumerate(variants))])
    return [Panel(f"{backbone} — top-1 % ({what} variants, change vs base)", ["Resolution", *(l for l, _ in variants)],
                  rows)]


def rsnets_table6(runs, commands=(), digits=1) -> Table:
    """Multi- vs single-resolution and single- vs multi-crop; single-res multi-crop at r = the job trained
    on [r]*k; single-res single-crop at r = the I-Net at r (see SINGLE_CROP_NOTE)."""
    table, ctx = new_table("rsnets_table6", "RS-Nets Table 6: multi-resolution and single-crop vs their ablations, "
                           "top-1 (%), change vs base", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        base = ctx.pick(rsnet_variant("multi-res single-crop"), backbone)
        multi_crop = ctx.pick(rsnet_variant("multi-res multi-crop", crop="multi"), backbone)
        single_multi_crop = _single_res_groups(ctx, backbone, "multi")
        inets = ctx.inet_set(backbone)
        train = training_resolutions(base, multi_crop) or sorted(
            set(single_multi_crop) | set(inet_resolutions(inets)), reverse=True)
        if not train:
            continue
        columns = [("Multi-res single-crop (base)", lambda r: base), ("Multi-res multi-crop", lambda r: multi_crop),
                   ("Single-res multi-crop", lambda r: single_multi_crop.get(r)),
                   ("Single-res single-crop (= I-Nets)", lambda r: inet_row(inets, r))]
        table.panels.append(_table6_panel(ctx, backbone, train, columns))
        ctx.notes.add(SINGLE_CROP_NOTE)
    return finish_table(table, ctx)


# The paper's single-resolution single-crop column equals its Table 2 I-Nets exactly, and must: k
# identical inputs through identical BN slots give k identical logits, so MRED's ensemble equals each
# prediction and every distillation term is zero; what is left is an I-Net whose shared weights get k×
# the gradient. So the column reads the I-Nets instead of training that model.
SINGLE_CROP_NOTE = ("Single-res single-crop = the I-Nets: k identical inputs through identical BN slots give "
                    "identical logits, so MRED vanishes and the model is an I-Net (the paper's column equals "
                    "its Table 2 I-Nets)")


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
        cells = [Cell(resolution_label(r))]
        for i, (label, group_at) in enumerate(columns):
            group = group_at(r)
            if group is None:
                what = f"I-Net {backbone}" if "I-Nets" in label else f"RS-Net {backbone} {label}"
                ctx.notes.missing(what + (f" r={r}" if label.startswith("Single") else ""))
            cells.append(_top1_delta(ctx, group, r, base, show_delta=i > 0))
        rows.append(cells)
    k = len(train)
    rows.append([Cell("Model Size"), Cell("1×"), Cell("1×"), Cell(f"{k}×"), Cell(f"{k}×")])
    return Panel(f"{backbone} — top-1 % (change vs base)", ["Resolution", *(label for label, _ in columns)], rows)


def rsnets_fig4(runs, commands=(), digits=1) -> Table:
    """Left: parallel shared vs private BN, I-Nets, RS-Net. Right: RS-Net (interpolated BN) vs each I-Net."""
    table, ctx = new_table("rsnets_fig4", "RS-Nets Fig. 4: (left) shared vs private BN in parallel training; "
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
    return finish_table(table, ctx)


def _fig4_left(ctx, backbone, models, inets):
    columns = [models[0], models[1], ("I-Nets", None), models[2]]
    train = sorted(set(training_resolutions(*(g for _, g in models))) | set(inet_resolutions(inets)), reverse=True)
    for label, group in models:
        if group is None:
            ctx.notes.missing(f"{label} {backbone}")
    rows, curves = [], {label: Points(label) for label, _ in columns}
    for r in train:
        cells = [Cell(resolution_label(r))]
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
    tests = test_columns_of(rsnet, mode="interp") or test_columns_of(rsnet)
    tests = sorted(set(tests) | set(test_columns_of(*(inet_row(inets, r) for r in inet_res))), reverse=True)
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
