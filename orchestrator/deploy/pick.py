"""Which resolution to run at on this machine for a latency budget (``resolab pick``).

The papers' promise — switch the input resolution to meet the resource limit — as a command. For every
test resolution T of the run's matrix, the best exportable route at T (the most accurate cell of the
fixed, ideal, proxy, nearest and interpolated modes; BN-recalibrated cells need training data, so they
are left out) is materialised as the plain CNN ``resolab export`` would write, and timed here: a few
warm-up runs, then the median of repeated ones. The accuracy-latency frontier is every route that no
faster route beats on top-1; the pick is the most accurate route within the budget.

The timer is a parameter (``timer(plain_model, resolution) -> ms``): tests give a fixed table, so
the choice logic is tested without depending on the machine's speed.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from orchestrator.deploy.export import ExportError, RouteChoice, plain_model
from records.names import ADAPTIVE_ROW

# Matrix mode -> how export runs it (bn, eps); fixed/ideal rows also pin the training slot.
MODE_ROUTES = {"fixed": ("nearest", "proxy"), "ideal": ("nearest", "ideal"), "proxy": ("nearest", "proxy"),
               "nearest": ("nearest", "proxy"), "interp": ("interpolate", "proxy")}

Timer = Callable[[torch.nn.Module, int], float]


@dataclass
class Candidate:
    resolution: int
    mode: str
    row: int  # the training resolution whose slot it uses; 0 = chosen from the resolution
    top1: float
    bn: str
    eps: str
    latency_ms: float = float("nan")
    madds: int | None = None
    frontier: bool = False

    @property
    def route(self) -> RouteChoice:
        return RouteChoice(self.resolution, bn=self.bn, eps=self.eps, row=self.row or None)

    def label(self) -> str:
        return self.mode if self.row == ADAPTIVE_ROW else f"{self.mode}, slot {self.row}"

    def export_options(self) -> str:
        opts = f"--resolution {self.resolution}"
        if self.row != ADAPTIVE_ROW:
            opts += f" --row {self.row}"
        if self.bn != "nearest":
            opts += f" --bn {self.bn}"
        if self.eps != "proxy":
            opts += f" --eps {self.eps}"
        return opts


@dataclass
class Pick:
    candidates: list[Candidate]  # one per test resolution, fastest first
    budget_ms: float
    choice: Candidate | None
    fastest: Candidate

    def frontier(self) -> list[Candidate]:
        return [c for c in self.candidates if c.frontier]

    def to_dict(self) -> dict:
        return {"budget_ms": self.budget_ms, "choice": asdict(self.choice) if self.choice else None,
                "fastest": asdict(self.fastest), "candidates": [asdict(c) for c in self.candidates]}


def best_routes(matrix) -> list[Candidate]:
    """The most accurate exportable cell at each test resolution (ties: the adaptive route, then the larger slot)."""
    best: dict[int, Candidate] = {}
    for rec in matrix.frame.itertuples(index=False):
        if rec.mode not in MODE_ROUTES:
            continue
        bn, eps = MODE_ROUTES[rec.mode]
        cand = Candidate(int(rec.test_res), rec.mode, int(rec.row), float(rec.top1), bn, eps)
        held = best.get(cand.resolution)
        if held is None or (cand.top1, cand.row == ADAPTIVE_ROW, cand.row) > (held.top1, held.row == ADAPTIVE_ROW, held.row):
            best[cand.resolution] = cand
    if not best:
        raise ExportError("the matrix holds no exportable cell (fixed, ideal, proxy, nearest or interp)")
    return list(best.values())


def mark_frontier(candidates: list[Candidate]) -> list[Candidate]:
    """Sort fastest first; a candidate is on the frontier when every faster one is less accurate."""
    candidates = sorted(candidates, key=lambda c: (c.latency_ms, -c.top1))
    best_so_far = float("-inf")
    for c in candidates:
        c.frontier = c.top1 > best_so_far
        best_so_far = max(best_so_far, c.top1)
    return candidates


def choose(candidates: list[Candidate], budget_ms: float) -> Pick:
    candidates = mark_frontier(candidates)
    fitting = [c for c in candidates if c.latency_ms <= budget_ms]
    choice = max(fitting, key=lambda c: (c.top1, -c.latency_ms)) if fitting else None
    return Pick(candidates, budget_ms, choice, candidates[0])


def wall_clock_timer(batch: int = 1, device: str = "cpu", warmup: int = 3, repeats: int = 15) -> Timer:
    """Median wall-clock milliseconds of one forward at ``batch`` x 3 x R x R, after ``warmup`` runs."""
    def timer(model: torch.nn.Module, resolution: int) -> float:
        model = model.to(device).eval()
        x = torch.randn(batch, 3, resolution, resolution, device=device)
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    return timer


def pick(net, matrix, budget_ms: float, timer: Timer, madds: Callable[[int], int] | None = None) -> Pick:
    """Time the best route at each test resolution of ``matrix`` and choose for ``budget_ms``."""
    if not budget_ms > 0:
        raise ExportError(f"--budget-ms must be positive, got {budget_ms}")
    candidates = best_routes(matrix)
    for c in candidates:
        c.latency_ms = float(timer(plain_model(net, c.route), c.resolution))
        c.madds = madds(c.resolution) if madds else None
    return choose(candidates, budget_ms)


def render(result: Pick, source: str) -> str:
    lines = [f"{'res':>5}  {'route':<16} {'top-1 %':>8} {'latency ms':>11} {'MAdds':>9}  frontier"]
    for c in result.candidates:
        madds = f"{c.madds / 1e6:,.1f}M" if c.madds is not None else "-"
        mark = "*" if c is result.choice else ""
        lines.append(f"{c.resolution:>5}  {c.label():<16} {c.top1:>8.2f} {c.latency_ms:>11.3f} {madds:>9}  "
                     f"{'yes' if c.frontier else ''}{'  <- pick' if mark else ''}")
    if result.choice:
        c = result.choice
        lines.append(f"pick: {c.resolution}px ({c.label()}), top-1 {c.top1:.2f}%, {c.latency_ms:.3f} ms within "
                     f"{result.budget_ms:g} ms; export it with: resolab export {source} {c.export_options()} "
                     "--format torchscript --out model.pt")
    else:
        f = result.fastest
        lines.append(f"nothing fits {result.budget_ms:g} ms: the fastest route is {f.resolution}px ({f.label()}) "
                     f"at {f.latency_ms:.3f} ms, top-1 {f.top1:.2f}%")
    return "\n".join(lines)
