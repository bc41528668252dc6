"""A classifier that runs at several input resolutions, switched explicitly.

``MultiResolutionNet`` wraps a backbone (any nn.Module built with switchable layers) and the list of
training resolutions. The active resolution is chosen per call:

    logits = net(x, resolution=160)                 # one resolution
    with net.at_resolution(176, bn="interpolate"):  # a block of calls, e.g. an unseen resolution
        logits = net.backbone(x)
    logits_per_res = net.forward_multi([x224, x192, ...])   # one training step, every resolution

How an unseen test resolution T is handled:
- bn="nearest": BN of the nearest training resolution S(T) (ties go to the larger);
- bn="interpolate": BN parameters and statistics linearly interpolated between the two training
  resolutions around T (RS-Nets Fig. 4 right), clamped to the nearest one outside the range;
- eps="proxy": meta convs get eps(S(T)) (SAN eq. 6); eps="ideal": eps(T) (SAN eq. 5).
Privatized convs always use the nearest slot.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from .quantized import QuantizedConv2d
from .switchable import Route, Switchable, scale_encoding

BN_MODES = ("nearest", "interpolate")
EPS_MODES = ("proxy", "ideal")


class MultiResolutionNet(nn.Module):
    def __init__(self, backbone: nn.Module, resolutions: Sequence[int]):
        super().__init__()
        self.backbone = backbone
        self.resolutions = [int(r) for r in resolutions]
        # A plain list, not a ModuleList: these modules are already registered inside the backbone.
        self._switchable = [m for m in backbone.modules() if isinstance(m, Switchable)]
        self._quantized_convs = [m for m in backbone.modules() if isinstance(m, QuantizedConv2d)]

    # ----------------------------------------------------------------- routing
    def nearest_slot(self, resolution: float) -> int:
        """Slot of the training resolution closest to ``resolution`` (ties: the larger one)."""
        return min(range(len(self.resolutions)),
                   key=lambda i: (abs(self.resolutions[i] - resolution), -self.resolutions[i]))

    def route(self, resolution: float, bn: str = "nearest", eps: str = "proxy", slot: int | None = None) -> Route:
        """The route for input ``resolution``; ``slot`` forces the training slot (a matrix row)."""
        if bn not in BN_MODES:
            raise ValueError(f"bn={bn!r}: choose one of {BN_MODES}")
        if eps not in EPS_MODES:
            raise ValueError(f"eps={eps!r}: choose one of {EPS_MODES}")
        near = self.nearest_slot(resolution) if slot is None else slot
        bn_route = (near, near, 0.0)
        if bn == "interpolate" and slot is None:
            bn_route = self._interpolation(resolution)
        encoded = scale_encoding(resolution if eps == "ideal" else self.resolutions[near])
        return Route(bn=bn_route, eps=encoded, conv=near)

    def _interpolation(self, resolution: float) -> tuple[int, int, float]:
        res = self.resolutions
        for i in range(len(res) - 1):
            hi, lo = res[i], res[i + 1]
            if lo < resolution < hi:
                return i, i + 1, float((hi - resolution) / (hi - lo))  # weight of the smaller neighbour
        near = self.nearest_slot(resolution)  # a training resolution itself, or outside the range
        return near, near, 0.0

    def set_route(self, route: Route | None) -> None:
        for m in self._switchable:
            m.set_route(route)

    @contextlib.contextmanager
    def at_resolution(self, resolution: float, bn: str = "nearest", eps: str = "proxy",
                      slot: int | None = None) -> Iterator["MultiResolutionNet"]:
        self.set_route(self.route(resolution, bn=bn, eps=eps, slot=slot))
        try:
            yield self
        finally:
            self.set_route(None)

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor | Sequence[torch.Tensor], resolution: int | None = None,
                **route_options) -> torch.Tensor | list[torch.Tensor]:
        """``net(x, resolution=r)`` for one batch; ``net([x_1, ..., x_S])`` for a training step.

        A training step goes through one ``forward`` call so that DDP sees one forward per backward.
        """
        if isinstance(x, (list, tuple)):
            return self.forward_multi(x)
        if resolution is None:
            resolution = x.shape[-1]
        with self.at_resolution(resolution, **route_options):
            return self.backbone(x)

    def forward_multi(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits for one batch at every training resolution, slot s for input s."""
        if len(xs) != len(self.resolutions):
            raise ValueError(f"got {len(xs)} inputs for {len(self.resolutions)} training resolutions {self.resolutions}")
        if self.training and torch.is_grad_enabled():
            # LQ-Nets' weight bases: refit once per training step, before any resolution runs, so that
            # every resolution of the step sees the same quantized weights.
            for conv in self._quantized_convs:
                conv.refit()
        outputs = []
        for slot, x in enumerate(xs):
            with self.at_resolution(self.resolutions[slot], slot=slot):
                outputs.append(self.backbone(x))
        return outputs
