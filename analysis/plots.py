"""Figures of accuracy matrices and of the papers' figures; one function per figure.

Figures are built as ``matplotlib.figure.Figure`` objects and rendered by the Agg canvas, never
through pyplot: nothing is registered globally, so nothing stays open after ``save`` and the
process-wide backend of a caller (e.g. a notebook) is left alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, NullFormatter

from analysis.matrix import ADAPTIVE_ROW


@dataclass
class Curve:
    label: str
    x: list[float]
    y: list[float]
    dashed: bool = False
    color_key: object = None  # curves with the same key share a colour (e.g. one training resolution)
    highlight_x: list[float] = field(default_factory=list)  # points drawn with a big marker


def new_figure(width: float = 6.4, height: float = 4.8, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    fig.clear()  # frees the artists; the figure is not known to pyplot, so there is nothing to close
    return path


def _colors(curves: list[Curve]) -> dict:
    from matplotlib import colormaps

    keys = list(dict.fromkeys(c.color_key if c.color_key is not None else c.label for c in curves))
    cmap = colormaps["viridis" if len(keys) > 10 else "tab10"]
    step = 1 / max(len(keys) - 1, 1) if len(keys) > 10 else 1
    return {key: cmap(i * step) for i, key in enumerate(keys)}


def _draw_curves(ax, curves: list[Curve], log_x: bool) -> None:
    colors = _colors(curves)
    for c in curves:
        color = colors[c.color_key if c.color_key is not None else c.label]
        ax.plot(c.x, c.y, linestyle="--" if c.dashed else "-", marker=".", color=color, label=c.label)
        hits = [(x, y) for x, y in zip(c.x, c.y) if x in set(c.highlight_x)]
        if hits:
            ax.plot(*zip(*hits), linestyle="none", marker="s" if c.dashed else "^", markersize=8, color=color)
    if log_x:
        ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize="small")


def _resolution_ticks(ax, curves: list[Curve]) -> None:
    """Label a log-scaled resolution axis with the resolutions themselves."""
    ticks = sorted({x for c in curves for x in c.x})
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=45)


def _madds_ticks(ax) -> None:
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_madds(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: format_madds(v)))
    ax.tick_params(axis="x", which="minor", labelsize="x-small")


def format_madds(value: float) -> str:
    """1814073344 -> '1.81G', 925798400 -> '926M' (three significant digits, as RS-Nets Table 2)."""
    for unit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= unit * 0.9995:
            return f"{float(f'{value / unit:.3g}'):g}{suffix}"
    return f"{value:.3g}"


def matrix_curves(frame: pd.DataFrame, madds: dict[int, int] | None = None) -> list[Curve]:
    """One curve per training row of the ``fixed`` mode (solid) plus one per adaptive mode (dashed).
    With ``madds`` the x axis is the MAdds of each test resolution instead of the resolution."""
    def x_of(test_res):
        return madds[test_res] if madds is not None else test_res

    curves = []
    fixed = frame[frame["mode"] == "fixed"]
    for row in sorted(fixed["row"].unique(), reverse=True):
        cells = fixed[fixed["row"] == row].sort_values("test_res")
        cells = cells[cells["test_res"].isin(madds)] if madds is not None else cells
        curves.append(Curve(f"train {row}", [x_of(t) for t in cells["test_res"]], list(cells["top1"]),
                            color_key=int(row), highlight_x=[x_of(row)] if row in set(cells["test_res"]) else []))
    adaptive = frame[frame["row"] == ADAPTIVE_ROW]
    for mode in dict.fromkeys(adaptive["mode"]):
        cells = adaptive[adaptive["mode"] == mode].sort_values("test_res")
        cells = cells[cells["test_res"].isin(madds)] if madds is not None else cells
        curves.append(Curve(mode, [x_of(t) for t in cells["test_res"]], list(cells["top1"]), dashed=True))
    return curves


def heatmap(table: pd.DataFrame, marked: set[tuple[int, int]], title: str = "", digits: int = 1) -> Figure:
    """Train rows x test columns, annotated; marked cells (diagonal, proxy rows) outlined in red."""
    table = table.astype(float)
    fig, (ax,) = new_figure(max(4.0, 0.7 * len(table.columns) + 2), max(3.0, 0.5 * len(table.index) + 1.5))
    image = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="top-1 (%)")
    ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    ax.set_yticks(range(len(table.index)), [str(r) for r in table.index])
    ax.set_xlabel("test resolution")
    ax.set_ylabel("train resolution")
    for i, row in enumerate(table.index):
        for j, col in enumerate(table.columns):
            value = table.iat[i, j]
            if pd.notna(value):
                ax.text(j, i, f"{value:.{digits}f}", ha="center", va="center", fontsize=8,
                        color="white" if value < table.stack().mean() else "black")
            if (row, col) in marked:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(f"{title}\n(outlined: train = test, or proxy row S(T))" if title else
                 "outlined: train = test, or proxy row S(T)", fontsize="medium")
    return fig


def _top1_axes(ax, xlabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize="medium")


def _resolution_panel(ax, curves: list[Curve], title: str) -> None:
    _draw_curves(ax, curves, log_x=True)
    _resolution_ticks(ax, curves)
    _top1_axes(ax, "test resolution (log scale)", title)


def _madds_panel(ax, curves: list[Curve], title: str) -> None:
    _draw_curves(ax, curves, log_x=True)
    _madds_ticks(ax)
    _top1_axes(ax, "MAdds (log scale)", title)


def accuracy_vs_test_resolution(curves: list[Curve], title: str = "") -> Figure:
    """SAN Fig. 1 style: top-1 vs test resolution (log x); markers where test = train."""
    fig, (ax,) = new_figure()
    _resolution_panel(ax, curves, title)
    return fig


def accuracy_vs_madds(curves: list[Curve], title: str = "") -> Figure:
    """RS-Nets Fig. 1 style: top-1 vs multiply-adds (log x)."""
    fig, (ax,) = new_figure()
    _madds_panel(ax, curves, title)
    return fig


def rsnets_fig4(left: list[Curve], right: list[Curve], title: str = "") -> Figure:
    """RS-Nets Fig. 4. Left: parallel shared vs private BN, I-Nets, RS-Net at the training resolutions.
    Right: RS-Net (interpolated BN) vs every I-Net at dense test resolutions."""
    fig, (ax_left, ax_right) = new_figure(12.0, 4.8, ncols=2)
    _draw_curves(ax_left, left, log_x=False)
    _top1_axes(ax_left, "resolution", "parallel training: shared vs private BN")
    _draw_curves(ax_right, right, log_x=False)
    _top1_axes(ax_right, "test resolution", "tested at new resolutions")
    if title:
        fig.suptitle(title)
    return fig


def fig1(left: list[Curve], right: list[Curve], title: str = "") -> Figure:
    """Both papers' Fig. 1. Left (SAN): top-1 vs test resolution per training row, SAN solid and
    I-Nets dashed. Right (RS-Nets): top-1 vs MAdds of a single model vs the set of I-Nets."""
    fig, (ax_left, ax_right) = new_figure(12.0, 4.8, ncols=2)
    _resolution_panel(ax_left, left, "SAN (solid) vs I-Nets (dashed)")
    _madds_panel(ax_right, right, "accuracy vs MAdds")
    if title:
        fig.suptitle(title)
    return fig


def variation_panels(panels: list[tuple[str, list[Curve]]], title: str = "") -> Figure:
    """RS-Nets Fig. 5: per panel, one line per training set: top-1 change over each I-Net at its resolution."""
    fig, axes = new_figure(6.0 * len(panels), 4.8, ncols=len(panels))
    for ax, (panel_title, curves) in zip(axes, panels):
        _draw_curves(ax, curves, log_x=False)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        _top1_axes(ax, "resolution", panel_title)
        ax.set_ylabel("top-1 change vs I-Net (%)")
    if title:
        fig.suptitle(title)
    return fig


def cdf_curves(curves: list[Curve], title: str = "") -> Figure:
    """RS-Nets Fig. 3 (right): cumulative distribution of activation values (curve x = value, y = level);
    test pre-processing dashed."""
    fig, (ax,) = new_figure()
    _draw_curves(ax, curves, log_x=False)
    ax.set_xlabel("GAP activation value")
    ax.set_ylabel("cumulative fraction")
    ax.set_title(title, fontsize="medium")
    return fig
