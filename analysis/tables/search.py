"""``make_tables.py search --suite NAME``: what each search of a suite found.

One row per search (a case × grid point of the suite, or one row of an I-Net set): the best configuration
(the searched keys of its winning sample, ``records.search_runs.best_samples``), its top-1 at each of its
training resolutions (fixed mode, mean ± std over the winner and its repeats, ``search.repeat``), the
searched metric of the winner, and the spread of that metric over the samples that ran to their end,
with the number stopped early. The figure plots the metric against each searched key, one colour per
search; samples stopped early are hollow, at the value they had reached.
"""
from __future__ import annotations

import functools
import math

import pandas as pd

from analysis import plots
from analysis.report import FIXED_MODE
from analysis.tables.model import Cell, Notes, Panel, Stat, Table, format_fixed, missing_cell
from analysis.tables.runs import DEFAULT_PARAMS, resolutions_of, value
from jobspec.search import REPEAT
from records import names
from records.search_runs import SearchRun, winners_with_repeats

SEED_PARAM = "params.train.seed"


def search(runs: pd.DataFrame, commands=(), digits: int = 1) -> Table:
    """The search table of the job runs of one suite (all of them: samples, stopped or not, and repeats)."""
    table = Table("search", "Search: the best configuration of each search, and the spread over its samples")
    notes = Notes(commands)
    column = names.tag_column(names.SEARCH)
    if runs is None or runs.empty or column not in runs or runs[column].isna().all():
        notes.missing("search samples (a suite with a `search:` section)")
        table.notes = notes.footer()
        return table
    runs = runs[runs[column].notna() & (runs["status"] == "FINISHED")]
    rows = {index: SearchRun.of_row(row) for index, row in runs.iterrows()}
    seeds_of = winners_with_repeats(rows.values())
    keys = searched_keys(runs)
    train = sorted({r for _, run in runs.iterrows() for r in resolutions_of(run)}, reverse=True)
    header = ["search", *keys, *(f"top-1 @{r}" for r in train), "metric", "best",
              "samples run to the end (min / median / max)", "stopped early"]
    body, points = [], {}
    for group in sorted(set(runs[column])):
        members = runs[runs[column] == group]
        samples = [rows[i] for i in members.index if rows[i].role != REPEAT]
        ended = [s.value() for s in samples if not s.stopped and s.value() is not None]
        points[group] = [(members.loc[i], rows[i]) for i in members.index if rows[i].role != REPEAT]
        if group not in seeds_of:
            notes.add(f"search {group}: no sample has run to its end yet")
            continue
        winner = seeds_of[group][0]
        won = members[members["run_id"] == winner.run_id].iloc[0]
        seeds = members[members["run_id"].isin([run.run_id for run in seeds_of[group]])]
        cells = [Cell(group), *(Cell(str(won[f"params.{k}"])) for k in keys)]
        for r in train:
            stat = notes.seen(value(seeds, FIXED_MODE, r, r)) if r in resolutions_of(won) else None
            cells.append(Cell(stat.text(digits)) if stat else missing_cell())
        values = seeds[f"metrics.{winner.tags[names.SEARCH_METRIC]}"].dropna()
        metric = notes.seen(Stat(tuple(float(v) for v in values)))
        spread = " / ".join(format_fixed(v, digits) for v in (min(ended), _median(ended), max(ended)))
        cells += [Cell(winner.tags[names.SEARCH_METRIC]), Cell(metric.text(digits), marked=True),
                  Cell(f"{spread} (n={len(ended)})"), Cell(str(sum(s.stopped for s in samples)))]
        body.append(cells)
    table.panels.append(Panel("Best configuration per search (top-1 %, fixed mode, at each training resolution)",
                              header, body))
    if keys and points:
        table.figures["search"] = functools.partial(_figure, points, keys)
    table.legend.append("best: the searched metric of the winning sample, over it and its repeats (search.repeat); "
                        "spread: over the samples its scheduler let run to the end")
    table.notes = notes.footer()
    return table


def searched_keys(runs: pd.DataFrame) -> list[str]:
    """The config keys that differ between the samples of some search (the seed aside)."""
    keys = []
    for key in DEFAULT_PARAMS:
        column = f"params.{key}"
        if column == SEED_PARAM or column not in runs:
            continue
        if any(len(set(members[column])) > 1 for _, members in runs.groupby(names.tag_column(names.SEARCH))):
            keys.append(key)
    return keys


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _figure(points: dict, keys: list[str]):
    """The metric against each searched key: one panel per key, one colour per search; hollow = stopped early."""
    fig, axes = plots.new_figure(width=max(6.4, 4.2 * len(keys)), height=4.2, ncols=len(keys))
    colors = {group: f"C{i % 10}" for i, group in enumerate(points)}
    for ax, key in zip(axes, keys):
        numeric = True
        for group, members in points.items():
            for stopped in (False, True):
                chosen = [(row, run) for row, run in members if run.stopped == stopped and run.value() is not None]
                if not chosen:
                    continue
                xs = [_number(row[f"params.{key}"]) for row, _ in chosen]
                numeric &= all(x is not None for x in xs)
                xs = [x if x is not None else str(row[f"params.{key}"]) for x, (row, _) in zip(xs, chosen)]
                ax.scatter(xs, [run.value() for _, run in chosen], s=36, edgecolors=colors[group],
                           facecolors="none" if stopped else colors[group],
                           label=None if stopped else group)
        positive = [x for _, members in points.items() for row, _ in members
                    if (x := _number(row[f"params.{key}"])) is not None and x > 0]
        every = sum(len(m) for m in points.values())
        if numeric and positive and len(positive) == every and max(positive) > 20 * min(positive):
            ax.set_xscale("log")
        elif numeric:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.set_xlabel(key)
        ax.set_ylabel(next(iter(points.values()))[0][1].tags.get(names.SEARCH_METRIC, "metric"))
        ax.grid(True, alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(4, len(points)),
               fontsize="small")
    fig.suptitle("Searched metric against each searched key (hollow: stopped early)")
    return fig


def _number(text) -> float | None:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
