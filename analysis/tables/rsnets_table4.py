"""RS-Nets Table 4: adjusting MobileNetV2's width vs adjusting its input resolution, top-1 %.

Left panel, one row per width multiplier: its MAdds at the largest training resolution, the I-Net
trained at that width and resolution (I-Nets-w), and the published S- and US-MobileNetV2 numbers
(``analysis.published``). Right panel, one row per training resolution at width 1.0: MAdds, the
I-Nets (I-Nets-r) and the RS-Net. The paper prints the halves side by side, row i beside row i
(comparable MAdds); two panels keep every CSV cell's (row, column) unambiguous. The 1.0x I-Net is
I-Nets-r's largest-resolution row: one job, read twice.
"""
from __future__ import annotations

import pandas as pd

from analysis import published
from analysis.tables.model_size import describe_run, madds_text
from analysis.report import FIXED_MODE
from analysis.tables.runs import backbones, inet_resolutions, inet_row, match, resolutions_of, seed_groups, training_resolutions
from analysis.tables.builder import RSNET, Context, Model, finish_table, first_run, new_table, resolution_label
from analysis.tables.model import MISSING, Cell, Panel, Table, missing_cell
from backbones.catalog import BACKBONES

FULL_WIDTH = 1.0
LEFT_HEADER = ["Width", "MAdds", "I-Nets-w"]  # then the published columns
RIGHT_HEADER = ["Resolution", "MAdds", "I-Nets-r", "RS-Net"]


def width_label(width: float) -> str:
    text = f"{width:g}"
    return f"{text if '.' in text else text + '.0'}×"


def reads_width(backbone: str) -> bool:
    return backbone in BACKBONES and "width_mult" in BACKBONES[backbone].reads


def width_criteria(backbone: str, width: float) -> dict:
    """Match on the width only where the backbone reads it: elsewhere the param is inert."""
    return {"model.width_mult": width} if reads_width(backbone) else {}


def at_width(model: Model, backbone: str, width: float) -> Model:
    return Model(model.label, (*model.params, *width_criteria(backbone, width).items()), model.kind)


def individual(backbone: str, width: float | None = None) -> dict:
    return {"method.name": "individual", "model.backbone": backbone,
            **(width_criteria(backbone, width) if width is not None else {})}


def inets_at_width(ctx: Context, backbone: str, width: float) -> pd.DataFrame | None:
    """The newest I-Net set (every resolution, every seed) at ``width``; other widths' single I-Nets
    are sets of their own, so they never stand in for it."""
    runs = match(ctx.runs, individual(backbone, width))
    sets = seed_groups(runs, drop=("data.resolutions",))
    if len(sets) > 1:
        ctx.notes.add(f"note: {len(sets)} I-Net sets at width {width_label(width)} on {backbone}; using the newest")
    return sets[0] if sets else None


def width_models(ctx: Context, backbone: str, resolution: int, widths: list[float]) -> dict[float, pd.DataFrame | None]:
    """Width -> seeds of the newest I-Net trained at ``resolution`` and that width."""
    out = {}
    for width in widths:
        runs = match(ctx.runs, individual(backbone, width), lambda res: res == [resolution])
        groups = seed_groups(runs)
        if len(groups) > 1:
            ctx.notes.add(f"note: {len(groups)} configurations fit I-Nets-w {width_label(width)} {backbone}; "
                          "using the newest")
        out[width] = groups[0] if groups else None
    return out


def run_widths(ctx: Context, backbone: str, resolution: int) -> set[float]:
    runs = match(ctx.runs, individual(backbone), lambda res: res == [resolution])
    return {float(w) for w in runs["params.model.width_mult"]}


def width_madds_text(ctx: Context, run: pd.Series | None, width: float, resolution: int) -> str:
    if run is None:
        return MISSING
    madds = describe_run(run, ctx.notes, "individual", [resolution], width_mult=width)["madds"]
    return madds_text(madds, resolution)


def rsnets_table4(runs, commands=(), digits=1) -> Table:
    table, ctx = new_table("rsnets_table4", "RS-Nets Table 4: top-1 (%) when adjusting the width (I-Nets-w, S, US) "
                           "vs the resolution (I-Nets-r, RS-Net)", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        table.panels += table4_panels(ctx, backbone)
    return finish_table(table, ctx)


def table4_panels(ctx: Context, backbone: str) -> list[Panel]:
    inets = inets_at_width(ctx, backbone, FULL_WIDTH)
    rsnet = ctx.pick(at_width(RSNET, backbone, FULL_WIDTH), backbone)
    train = sorted(set(training_resolutions(rsnet)) | set(inet_resolutions(inets)), reverse=True)
    singles = match(ctx.runs, individual(backbone))
    if not train and singles.empty:
        return []
    largest = max(train) if train else max(max(resolutions_of(run)) for _, run in singles.iterrows())
    quoted = published.rows("RS-Nets", "Table 4", backbone)
    if reads_width(backbone):
        widths = {FULL_WIDTH} | run_widths(ctx, backbone, largest) | {w for p in quoted for w in p.keys()}
    else:
        widths = {FULL_WIDTH}
        ctx.notes.add(f"note: {backbone} has no width multiplier; I-Nets-w has its {width_label(FULL_WIDTH)} row only")
    widths = sorted(widths, reverse=True)
    by_width = width_models(ctx, backbone, largest, widths)
    any_run = first_run(inets, rsnet, *by_width.values())
    madds = describe_run(any_run, ctx.notes, method="individual", resolutions=train)["madds"] if train else {}
    left = [width_cells(ctx, backbone, any_run, w, largest, by_width[w], quoted) for w in widths]
    # One model per width (I-Nets-w); published switchable models say their own size.
    left.append([Cell("Model Size"), Cell(""), Cell(f"{len(widths)}×"), *(Cell(p.model_size) for p in quoted)])
    for p in quoted:
        ctx.notes.add(p.footnote())
    panels = [Panel(f"{backbone} — left: adjusting the width, top-1 % at {resolution_label(largest)}",
                    LEFT_HEADER + [p.label for p in quoted], left)]
    if train:
        right = [resolution_cells(ctx, backbone, r, madds, inets, rsnet) for r in train]
        right.append([Cell("Model Size"), Cell(""), Cell(f"{len(train)}×"), Cell("1×")])
        panels.append(Panel(f"{backbone} — right: adjusting the resolution, top-1 % at width {width_label(FULL_WIDTH)}",
                            RIGHT_HEADER, right))
    if rsnet is None:
        ctx.notes.missing(f"RS-Net {backbone}")
    return panels


def width_cells(ctx: Context, backbone: str, any_run, width: float, largest: int, group, quoted) -> list[Cell]:
    if group is None:
        ctx.notes.missing(f"I-Nets-w {backbone} {width_label(width)}")
    stat = ctx.stat(group, FIXED_MODE, largest, largest)
    cells = [Cell(width_label(width)), Cell(width_madds_text(ctx, any_run, width, largest)), Cell(ctx.text(stat))]
    for p in quoted:
        value = p.at(width)
        cells.append(Cell(f"{value:.1f}") if value is not None else missing_cell())
    return cells


def resolution_cells(ctx: Context, backbone: str, r: int, madds: dict, inets, rsnet) -> list[Cell]:
    row = inet_row(inets, r)
    if row is None:
        ctx.notes.missing(f"I-Nets-r {backbone} r={r}" if inets is not None else f"I-Nets-r {backbone}")
    return [Cell(resolution_label(r)), Cell(madds_text(madds, r)),
            Cell(ctx.text(ctx.stat(row, FIXED_MODE, r, r))), Cell(ctx.text(ctx.stat(rsnet, FIXED_MODE, r, r)))]
