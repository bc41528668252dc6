"""Parallel training (RS-Nets §3.1): shared convs and FC, private (or, as an ablation, shared) BN, loss = sum of CEs."""
from __future__ import annotations

from backbones import build_net

from . import losses
from .base import FIXED, EvalMode, LossOutput, Method


class Parallel(Method):

    def build(self, num_classes):
        return build_net(self.model.backbone, num_classes, self.resolutions, bn=self.options.bn,
                         **self.build_net_kwargs())

    def loss(self, net, logits, labels):
        ce = losses.classification(logits, labels)
        return LossOutput(ce, {"cls": ce.detach()})

    def eval_modes(self, calibrate):
        modes = [FIXED, EvalMode("nearest", per_row=False, bn="nearest")]
        if self.options.bn == "private" and len(set(self.resolutions)) > 1:
            modes.append(EvalMode("interp", per_row=False, bn="interpolate"))
        return modes
