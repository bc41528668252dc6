"""The train x test-resolution accuracy matrix of a trained job, for every inference mode its method supports.

Long form is the source of truth: one record per (mode, row, test_res) with top-1 and top-5 in %.
``row`` is the training resolution whose slot (BN, and eps unless the mode says "ideal") is used;
``row == 0`` marks an adaptive mode that picks the route from the test resolution alone (SAN proxy,
RS-Net nearest / interpolated BN).

Cost: every validation image is decoded once and resized to all test resolutions; cells that share
a route (e.g. SAN proxy at T and the fixed row S(T) at T, or ideal at a training resolution) are
evaluated once. "ideal_calib" cells are measured at test resolutions outside the training set only
(SAN Table 2); at a training resolution BN statistics already match.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn

from backbones import MultiResolutionNet, materialize, recalibrate_bn
from methods import EvalMode

ADAPTIVE_ROW = 0
COLUMNS = ["mode", "row", "test_res", "top1", "top5"]


@dataclass
class Matrix:
    frame: pd.DataFrame  # long form, COLUMNS

    def table(self, mode: str = "fixed", metric: str = "top1") -> pd.DataFrame:
        """Wide view: one row per training resolution (or 'adaptive'), one column per test resolution."""
        sub = self.frame[self.frame["mode"] == mode]
        wide = sub.pivot(index="row", columns="test_res", values=metric)
        wide = wide.sort_index(ascending=False).sort_index(axis=1, ascending=False)
        wide.index = ["adaptive" if r == ADAPTIVE_ROW else int(r) for r in wide.index]
        wide.index.name, wide.columns.name = "train \\ test", None
        return wide

    def modes(self) -> list[str]:
        return list(dict.fromkeys(self.frame["mode"]))

    def to_text(self) -> str:
        parts = []
        for mode in self.modes():
            parts.append(f"[{mode}] top-1 (%)\n{self.table(mode).round(2).to_string()}")
        return "\n\n".join(parts)

    @staticmethod
    def concat(matrices: Iterable["Matrix"]) -> "Matrix":
        return Matrix(pd.concat([m.frame for m in matrices], ignore_index=True))


def _cells(net: MultiResolutionNet, modes: Sequence[EvalMode], test_resolutions: Sequence[int]):
    """(mode name, row, T) -> evaluation key; the key is what decides the numbers (route + calibration)."""
    training = set(net.resolutions)
    rows = list(dict.fromkeys(net.resolutions))  # repeated resolutions ("single-resolution") share a row
    cells = {}
    for mode in modes:
        for T in test_resolutions:
            calibrate = mode.calibrate and T not in training
            if mode.calibrate and not calibrate:
                continue
            if mode.per_row:
                for r in rows:
                    route = net.route(T, bn=mode.bn, eps=mode.eps, slot=net.resolutions.index(r))
                    cells[(mode.name, r, T)] = (route, calibrate)
            else:
                cells[(mode.name, ADAPTIVE_ROW, T)] = (net.route(T, bn=mode.bn, eps=mode.eps), False)
    return cells


@torch.no_grad()
def evaluate_matrix(net: MultiResolutionNet, modes: Sequence[EvalMode], val_loader, test_resolutions: Sequence[int],
                    device: torch.device, *, calibration_batches: Callable[[int], list] | None = None,
                    max_batches: int | None = None) -> Matrix:
    """Evaluate every cell in one pass over ``val_loader`` (batches: (tuple over test_resolutions, labels))."""
    net.eval()
    cells = _cells(net, modes, test_resolutions)
    keys = {}  # unique (T, route, calibrate) -> index
    for (_, _, T), (route, calibrate) in cells.items():
        keys.setdefault((T, route, calibrate), len(keys))
    calibrated: dict[tuple, nn.Module] = {}
    batches_at: dict[int, list] = {}  # one test resolution's calibration batches, shared by its rows
    for (T, route, calibrate) in keys:
        if calibrate:
            if calibration_batches is None:
                raise ValueError("a calibrated mode needs calibration_batches")
            if T not in batches_at:
                batches_at.clear()  # keep one resolution's images in memory, not all of them
                batches_at[T] = calibration_batches(T)
            slot = route.conv
            plain = materialize(net, T, bn="nearest", eps="ideal", slot=slot).to(device)
            calibrated[(T, route)] = recalibrate_bn(plain, batches_at[T]).eval()

    top1 = torch.zeros(len(keys))
    top5 = torch.zeros(len(keys))
    seen = 0
    column = {T: i for i, T in enumerate(test_resolutions)}
    for b, (xs, labels) in enumerate(val_loader):
        if max_batches is not None and b >= max_batches:
            break
        labels = labels.to(device)
        for (T, route, calibrate), idx in keys.items():
            x = xs[column[T]].to(device)
            if calibrate:
                logits = calibrated[(T, route)](x)
            else:
                net.set_route(route)
                try:
                    logits = net.backbone(x)
                finally:
                    net.set_route(None)
            topk = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hit = topk == labels[:, None]
            top1[idx] += hit[:, 0].sum().item()
            top5[idx] += hit.any(dim=1).sum().item()
        seen += labels.numel()
    if seen == 0:
        raise ValueError("the validation loader yielded no images")
    records = []
    for (mode, row, T), (route, calibrate) in cells.items():
        idx = keys[(T, route, calibrate)]
        records.append((mode, int(row), int(T), 100.0 * top1[idx].item() / seen, 100.0 * top5[idx].item() / seen))
    return Matrix(pd.DataFrame.from_records(records, columns=COLUMNS))
