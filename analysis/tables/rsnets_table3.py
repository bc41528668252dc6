"""RS-Nets Table 3: quantized I-Nets vs a quantized RS-Net (LQ-Nets), top-1 / top-5 % with top-1 gains.

One panel per network (ResNet-18, ResNet-50, ...), as the paper prints it: rows are the training
resolutions, and for each bit setting present in the runs (W2/A32, then W2/A2) the I-Nets (base) and
the RS-Net. A setting's models may sit on the network's pre-activation twin (W2/A2 runs on
``preact_resnet18``): a network is its backbone name without ``preact_``. Under the accuracies, the
storage argument of the paper's §4.2 as numbers ``resolab describe`` prints: bits per conv weight
(2 for an RS-Net, log2(5 × 2^2) ≈ 4.3 for five 2-bit I-Nets) and the models' size in MB.

Also the quantized points of RS-Nets Fig. 1 (``quantized_fig1_points``), and the split of runs into
full-precision and quantized ones that keeps the full-precision tables' model picks unmixed.
"""
from __future__ import annotations

import pandas as pd

from analysis import plots
from analysis.tables.model_size import describe_run, madds_text
from analysis.report import FIXED_MODE
from analysis.tables.rsnets import top1_top5_cell
from analysis.tables.runs import backbones, inet_resolutions, inet_row, match, seed_groups, training_resolutions
from analysis.tables.builder import RSNET, Context, Model, Points, finish_table, first_run, new_table, resolution_label
from analysis.tables.model import MISSING, Cell, Panel, Table
from backbones.catalog import FULL_PRECISION

PREACT = "preact_"
BITS = ("model.weight_bits", "model.act_bits")


def network(backbone: str) -> str:
    """The network a backbone is a variant of: ``preact_resnet18`` -> ``resnet18``."""
    return backbone[len(PREACT):] if backbone.startswith(PREACT) else backbone


def bits_of(runs: pd.DataFrame) -> pd.Series:
    """(weight bits, act bits) of every run; runs logged before quantization existed have (32, 32)."""
    return runs.apply(lambda run: tuple(int(str(run.get(f"params.{k}", FULL_PRECISION))) for k in BITS), axis=1)


def full_precision(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[bits_of(runs) == (FULL_PRECISION, FULL_PRECISION)] if len(runs) else runs


def quantized(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[bits_of(runs) != (FULL_PRECISION, FULL_PRECISION)] if len(runs) else runs


def setting_label(bits: tuple[int, int]) -> str:
    return f"W{bits[0]}/A{bits[1]}"


def settings(runs: pd.DataFrame, net: str) -> list[tuple[str, tuple[int, int]]]:
    """(backbone, bits) of every quantized setting of ``net`` in the runs: W2/A32 before W2/A2."""
    runs = quantized(runs)
    found = {}
    for backbone in backbones(runs):
        if network(backbone) != net:
            continue
        for bits in set(bits_of(runs[runs["params.model.backbone"] == backbone])):
            found.setdefault(bits, backbone)  # BACKBONES order: the plain net before its preact twin
    return [(found[b], b) for b in sorted(found, key=lambda b: (-b[1], -b[0]))]


def networks(runs: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(network(b) for b in backbones(quantized(runs))))


def _criteria(backbone: str, bits: tuple[int, int]) -> dict:
    return {"model.backbone": backbone, **dict(zip(BITS, bits))}


def quantized_inets(ctx: Context, backbone: str, bits: tuple[int, int]) -> pd.DataFrame | None:
    """The newest quantized I-Net set (every resolution, every seed) of this setting."""
    sets = seed_groups(match(ctx.runs, {"method.name": "individual", **_criteria(backbone, bits)}),
                       drop=("data.resolutions",))
    if len(sets) > 1:
        ctx.notes.add(f"note: {len(sets)} {setting_label(bits)} I-Net sets on {backbone}; using the newest")
    return sets[0] if sets else None


def quantized_rsnet(ctx: Context, backbone: str, bits: tuple[int, int]) -> pd.DataFrame | None:
    model = Model(RSNET.label, (*RSNET.params, *dict(zip(BITS, bits)).items()), RSNET.kind)
    return ctx.pick(model, backbone, what=f"{setting_label(bits)} RS-Net")


def rsnets_table3(runs, commands=(), digits=1, *, predictions=None, ci=None) -> Table:
    """``predictions`` and ``ci``: as ``rsnets_table2`` (intervals on the gains with --ci)."""
    table, ctx = new_table("rsnets_table3", "RS-Nets Table 3: quantized I-Nets vs quantized RS-Net (LQ-Nets), "
                           "top-1 / top-5 (%), top-1 gain over I-Nets; storage and size", runs, commands, digits,
                           predictions, ci)
    for net in networks(ctx.runs):
        panel = table3_panel(ctx, net)
        table.panels += [panel] if panel else []
    return finish_table(table, ctx)


def table3_panel(ctx: Context, net: str) -> Panel | None:
    models = []  # (label, backbone, bits, I-Nets, RS-Net)
    for backbone, bits in settings(ctx.runs, net):
        inets, rsnet = quantized_inets(ctx, backbone, bits), quantized_rsnet(ctx, backbone, bits)
        for what, group in (("I-Nets", inets), ("RS-Net", rsnet)):
            if group is None:
                ctx.notes.missing(f"{setting_label(bits)} {what} {backbone}")
        models.append((setting_label(bits), backbone, inets, rsnet))
    if not models:
        return None
    groups = [g for *_, inets, rsnet in models for g in (rsnet, inets)]
    train = sorted({r for *_, inets, rsnet in models for r in training_resolutions(rsnet) + inet_resolutions(inets)},
                   reverse=True)
    madds = describe_run(first_run(*groups), ctx.notes, "individual", train)["madds"]
    rows = []
    for r in train:
        cells = [Cell(resolution_label(r)), Cell(madds_text(madds, r))]
        for _, _, inets, rsnet in models:
            base_group = inet_row(inets, r)
            base = ctx.stat(base_group, FIXED_MODE, r, r)
            cells += [top1_top5_cell(ctx, base_group, r, None),
                      top1_top5_cell(ctx, rsnet, r, base, base_group=base_group)]
        rows.append(cells)
    rows += _storage_rows(ctx, models, train)
    header = ["Resolution", "MAdds"] + [f"{label} {what}" for label, *_ in models
                                        for what in ("I-Nets (base)", "RS-Net")]
    where = ", ".join(f"{label} on {backbone}" for label, backbone, *_ in models)
    return Panel(f"Quantized {net} ({where}) — top-1 / top-5 % (top-1 gain over I-Nets)", header, rows)


def _storage_rows(ctx: Context, models, train: list[int]) -> list[list[Cell]]:
    """Bits per conv weight and model size, counted by ``resolab describe`` (analysis/describe.py)."""
    bits_row, size_row = [Cell("Storage (bits / conv weight)"), Cell("")], [Cell("Model size (MB)"), Cell("")]
    for _, _, inets, rsnet in models:
        for group, method, resolutions in ((inets, "individual", train), (rsnet, None, None)):
            info = describe_run(group.iloc[0], ctx.notes, method, resolutions) if group is not None else {}
            bits, size = info.get("storage_bits"), info.get("size_MB")
            bits_row.append(Cell(f"{bits:.1f}" if bits is not None else MISSING))
            size_row.append(Cell(f"{size:.1f}" if size is not None else MISSING))
    return [bits_row, size_row]


def quantized_fig1_points(ctx: Context, net: str, madds: dict) -> tuple[Panel | None, list[plots.Curve]]:
    """RS-Nets Fig. 1's quantized points of ``net``: top-1 vs MAdds per setting, I-Nets dashed."""
    curves, rows, columns = [], {}, []
    for backbone, bits in settings(ctx.runs, net):
        label = setting_label(bits)
        inets, rsnet = quantized_inets(ctx, backbone, bits), quantized_rsnet(ctx, backbone, bits)
        for what, group_at in ((f"I-Nets {label}", lambda r: inet_row(inets, r)), (f"RS-Net {label}", lambda r: rsnet)):
            points = Points(what)
            columns.append(what)
            for r in sorted(set(training_resolutions(rsnet) + inet_resolutions(inets)), reverse=True):
                stat = ctx.stat(group_at(r), FIXED_MODE, r, r)
                rows.setdefault(r, {})[what] = ctx.text(stat)
                if str(r) in madds:
                    points.add(madds[str(r)], stat)
            if points.x:
                curves.append(points.curve(dashed=what.startswith("I-Nets")))
    if not columns:
        return None, []
    body = [[Cell(resolution_label(r)), Cell(madds_text(madds, r)), *(Cell(rows[r].get(c, MISSING)) for c in columns)]
            for r in sorted(rows, reverse=True)]
    return Panel(f"{net} — quantized (RS-Nets Table 3): top-1 % (points of the MAdds plot)",
                 ["Resolution", "MAdds", *columns], body), curves

