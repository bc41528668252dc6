"""Parallel training (RS-Nets §3.1): shared convs and FC, private (or, as an ablation, shared) BN, loss = sum of CEs."""
from __future__ import annotations

from backbones import build_net

from . import losses
from .base import FIXED, EvalMode, LossOutput, Method, register


@register
class Parallel(Method):
    name = "parallel"

    def build(self, num_classes):
        m = self.cfg.model
        norm = "private" if self.cfg.method.bn == "private" else "plain"
        return build_net(m.backbone, num_classes, self.resolutions, norm=norm, small_input=m.small_input,
                         width=m.width)

    def loss(self, net, logits, labels):
        ce = losses.classification(logits, labels)
        return LossOutput(ce, {"cls": ce.detach()})

    def eval_modes(self):
        modes = [FIXED, EvalMode("nearest", per_row=False, bn="nearest")]
        if self.cfg.method.bn == "private" and len(set(self.resolutions)) > 1:
            modes.append(EvalMode("interp", per_row=False, bn="interpolate"))
        return modes
