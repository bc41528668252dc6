"""RS-Nets Fig. 3 (right): the value distributions of the GAP feature activations of trained ResNet-18s
on validation images, under the training pre-processing (random-size crop) and the test pre-processing
(centre crop), per training resolution. The train-test discrepancy shows as the shift between a
model's "(train)" and "(test)" curves.

Read from the ``gap_cdf.parquet`` artifact that jobs with ``eval.gap_cdf: true`` record (quantiles of
every GAP output component); the table prints a few quantiles, the figure the CDF curves.
"""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from analysis import plots
from analysis.tables.runs import backbones, resolutions_of
from analysis.tables.builder import finish_table, new_table
from analysis.tables.model import Cell, Panel, Table, format_fixed

SHOWN_LEVELS = (0.25, 0.5, 0.75, 0.9, 0.99)
ORDER = {"individual": 0, "parallel": 1, "rsnet": 2, "san": 3}


def model_label(run: pd.Series) -> str:
    resolutions = resolutions_of(run)
    method = run["params.method.name"]
    if method == "individual":
        return f"I-{resolutions[0]}"
    names = {"parallel": "Parallel", "rsnet": "RS-Net", "san": "SAN"}
    return f"{names.get(method, method)} {{{', '.join(map(str, resolutions))}}}"


def rsnets_fig3(runs, commands=(), digits=2, gap_cdf=None) -> Table:
    table, ctx = new_table("rsnets_fig3", "RS-Nets Fig. 3 (right): GAP activations on validation images under the "
                           "training and the test pre-processing, quantiles", runs, commands, digits)
    for backbone in backbones(ctx.runs):
        runs_here = ctx.runs[ctx.runs["params.model.backbone"] == backbone]
        runs_here = sorted((run for _, run in runs_here.iterrows()),
                           key=lambda run: (ORDER.get(run["params.method.name"], 9), -max(resolutions_of(run))))
        rows, curves = [], []
        for run in runs_here:
            frame = gap_cdf(run["run_id"]) if gap_cdf is not None else None
            if frame is None:
                ctx.notes.add(f"note: {model_label(run)} {backbone} recorded no GAP activations — evaluate it with "
                              "eval.gap_cdf=true (resolab evaluate experiments/rsnets_fig3.yaml)")
                continue
            for row, preprocessing in _curves_in_order(frame):
                group = frame[(frame["row"] == row) & (frame["preprocessing"] == preprocessing)].sort_values("level")
                levels, values = group["level"].to_numpy(), group["value"].to_numpy()
                name = f"{model_label(run)} at {row} ({preprocessing})"
                quantiles = [np.interp(level, levels, values) for level in SHOWN_LEVELS]
                rows.append([Cell(name), *(Cell(format_fixed(q, ctx.digits)) for q in quantiles)])
                curves.append(plots.Curve(name, list(values), list(levels), dashed=preprocessing == "test",
                                          color_key=(model_label(run), row)))
        if not rows:
            continue
        header = ["model at resolution (pre-processing)", *(f"q{round(level * 100)}" for level in SHOWN_LEVELS)]
        table.panels.append(Panel(f"{backbone} — GAP activation quantiles", header, rows))
        table.figures[f"fig3_{backbone}"] = functools.partial(plots.cdf_curves, curves,
                                                               f"RS-Nets Fig. 3 (right) — {backbone}")
    if not table.panels:
        ctx.notes.missing("GAP activations of any model")
    return finish_table(table, ctx)


def _curves_in_order(frame: pd.DataFrame) -> list[tuple[int, str]]:
    """Largest resolution first; at each, the training pre-processing before the test one."""
    present = set(zip(frame["row"], frame["preprocessing"]))
    return [(row, p) for row in sorted({r for r, _ in present}, reverse=True) for p in ("train", "test")
            if (row, p) in present]
