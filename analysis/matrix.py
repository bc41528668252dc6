"""The train x test-resolution accuracy matrix of a trained job, for every inference mode its method supports.

Long form is the source of truth: one record per (mode, row, test_res) with top-1 and top-5 in %.
``row`` is the training resolution whose slot (BN, and eps unless the mode says "ideal") is used;
``row == 0`` marks an adaptive mode that picks the route from the test resolution alone (SAN proxy,
RS-Net nearest / interpolated BN).

Cost: every validation image is decoded once and resized to all test resolutions; cells that share
a route (e.g. SAN proxy at T and the fixed row S(T) at T, or ideal at a training resolution) are
evaluated once. "ideal_calib" cells are measured at test resolutions outside the training set only
(SAN Table 2); at a training resolution BN statistics already match.

The same pass keeps every image's top-1 class per cell (``Matrix.predictions``, the layout of
``analysis.predictions``): per-image analyses (RS-Nets Table 1, bootstrap intervals) need no second forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pandas as pd
import torch
import torch.nn as nn

from analysis.predictions import predictions_frame
from backbones import MultiResolutionNet, Route, materialize, recalibrate_bn
from backbones.preprocess import normalize_on_device
from methods import FIXED, EvalMode
from records.names import ADAPTIVE_ROW

COLUMNS = ["mode", "row", "test_res", "top1", "top5"]


@dataclass
class Matrix:
    frame: pd.DataFrame  # long form, COLUMNS
    predictions: pd.DataFrame | None = None  # per-image top-1 of every cell (analysis.predictions), when evaluated
    gap_cdf: pd.DataFrame | None = None  # GAP activation quantiles (orchestrator.engine.gap_features), when eval.gap_cdf

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


Cells = dict[tuple[str, int, int], tuple[Route, bool]]  # (mode name, row, T) -> (route, calibrate)


def matrix_cells(net: MultiResolutionNet, modes: Sequence[EvalMode], test_resolutions: Sequence[int]) -> Cells:
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


def diagonal_cells(net: MultiResolutionNet) -> Cells:
    """The fixed mode's diagonal: each training slot at its own resolution."""
    rows = list(dict.fromkeys(net.resolutions))
    return {key: cell for key, cell in matrix_cells(net, [FIXED], rows).items() if key[1] == key[2]}


def _count_hits(net: MultiResolutionNet, cells: Cells, val_loader, test_resolutions: Sequence[int],
                device: torch.device, calibration_batches: Callable[[int], list] | None,
                max_batches: int | None, keep_predictions: bool = False) -> tuple[dict, int, pd.DataFrame | None]:
    """One pass over ``val_loader``: {cell: (top-1 hits, top-5 hits)}, the number of images seen and,
    with ``keep_predictions``, every image's top-1 class per cell."""
    net.eval()
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
    labels_seen: list[torch.Tensor] = []
    predicted: dict[int, list[torch.Tensor]] = {idx: [] for idx in keys.values()}
    column = {T: i for i, T in enumerate(test_resolutions)}
    for b, (xs, labels) in enumerate(val_loader):
        if max_batches is not None and b >= max_batches:
            break
        labels = labels.to(device)
        inputs: dict[int, torch.Tensor] = {}  # uint8 from the loader: normalised on the device, once per T
        for (T, route, calibrate), idx in keys.items():
            if T not in inputs:
                inputs[T] = normalize_on_device(xs[column[T]], device)
            x = inputs[T]
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
            if keep_predictions:
                predicted[idx].append(topk[:, 0].cpu())  # the class the top-1 hit above was counted on
        if keep_predictions:
            labels_seen.append(labels.cpu())
        seen += labels.numel()
    hits, cell_predictions = {}, {}
    for key, (route, calibrate) in cells.items():
        idx = keys[(key[2], route, calibrate)]
        hits[key] = (top1[idx].item(), top5[idx].item())
        if keep_predictions and seen:
            cell_predictions[key] = torch.cat(predicted[idx]).numpy()
    if not (keep_predictions and seen):
        return hits, seen, None
    return hits, seen, predictions_frame(torch.cat(labels_seen).numpy(), cell_predictions)


@torch.no_grad()
def evaluate_cells(net: MultiResolutionNet, cells: Cells, val_loader, test_resolutions: Sequence[int],
                   device: torch.device, *, calibration_batches: Callable[[int], list] | None = None,
                   max_batches: int | None = None) -> Matrix:
    """Evaluate ``cells`` in one pass over ``val_loader`` (batches: (tuple over test_resolutions, labels)),
    keeping each image's top-1 class per cell in ``Matrix.predictions``."""
    hits, seen, predictions = _count_hits(net, cells, val_loader, test_resolutions, device, calibration_batches,
                                          max_batches, keep_predictions=True)
    if seen == 0:
        raise ValueError("the validation loader yielded no images")
    records = [(mode, int(row), int(T), 100.0 * h1 / seen, 100.0 * h5 / seen)
               for (mode, row, T), (h1, h5) in hits.items()]
    return Matrix(pd.DataFrame.from_records(records, columns=COLUMNS), predictions)


def evaluate_matrix(net: MultiResolutionNet, modes: Sequence[EvalMode], val_loader, test_resolutions: Sequence[int],
                    device: torch.device, *, calibration_batches: Callable[[int], list] | None = None,
                    max_batches: int | None = None) -> Matrix:
    """Every cell of every mode in one pass over ``val_loader`` (batches: (tuple over test_resolutions, labels))."""
    return evaluate_cells(net, matrix_cells(net, modes, test_resolutions), val_loader, test_resolutions, device,
                          calibration_batches=calibration_batches, max_batches=max_batches)


@torch.no_grad()
def diagonal_top1(net: MultiResolutionNet, val_loader, test_resolutions: Sequence[int], device: torch.device,
                  max_batches: int | None = None) -> dict[str, float]:
    """Top-1 (%) of each training slot at its own resolution, {"acc1/r<res>": value}: the per-epoch curves;
    and their mean over the training resolutions, "acc1/mean" (what a suite's search ranks by default).

    ``val_loader`` yields batches over ``test_resolutions``, which hold every training resolution.
    The net's train/eval mode is left as it was. A loader capped to nothing gives 0 rather than an
    error, so that a smoke setting cannot stop training midway.
    """
    was_training = net.training
    try:
        hits, seen, _ = _count_hits(net, diagonal_cells(net), val_loader, test_resolutions, device, None, max_batches)
    finally:
        net.train(was_training)
    top1 = {row: h1 for (_, row, _), (h1, _) in hits.items()}
    curves = {f"acc1/r{r}": 100.0 * top1[r] / max(1, seen) for r in dict.fromkeys(net.resolutions)}
    return {**curves, "acc1/mean": sum(curves.values()) / len(curves)}
