"""What a table is, whatever it is rendered as: panels of text cells, the notes under them, and the
seed statistics the cells print.

A cell over several seeds prints ``mean ± std`` (sample std, ddof=1), a single seed its mean; a cell
without runs prints ``—`` (never 0), and ``Notes`` puts a ``missing: ... — run: resolab run <suite
file>`` line under the table. ``analysis.tables.render`` writes a ``Table`` as Markdown, LaTeX or CSV.
"""
from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pandas as pd

from analysis import plots

MISSING = "—"
PROXY_LEGEND = "**bold** = proxy inference: row S(T), the training resolution nearest to the test resolution T (ties to the larger)"


def format_fixed(x: float, digits: int) -> str:
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def format_signed(x: float, digits: int) -> str:
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
        mean = format_fixed(self.mean, digits)
        return f"{mean} ± {format_fixed(self.std, digits)}" if self.n > 1 else mean


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
