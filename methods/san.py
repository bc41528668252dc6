"""SAN (Li et al.): meta-network-generated convs + private BN + scale distillation.

Ablations: ``method.scale_distill=false`` (Table 3 w/o SD), ``method.bn=shared`` (Table 3),
``method.convs=private`` (Table 4: one conv per resolution instead of the meta net),
``method.meta_hidden=8|16`` (Table 5: an MLP meta net).
"""
from __future__ import annotations

from backbones import build_net

from . import losses
from .base import FIXED, EvalMode, LossOutput, Method, register


@register
class SAN(Method):
    name = "san"

    def build(self, num_classes):
        m, opts = self.cfg.model, self.cfg.method
        return build_net(m.backbone, num_classes, self.resolutions,
                         norm="private" if opts.bn == "private" else "plain",
                         convs="meta" if opts.convs == "meta" else "private",
                         meta_hidden=opts.meta_hidden, small_input=m.small_input, width=m.width)

    def loss(self, net, logits, labels):
        ce = losses.classification(logits, labels)
        if not self.cfg.method.scale_distill:
            return LossOutput(ce, {"cls": ce.detach()})
        sd = losses.scale_distillation(logits, self.resolutions)
        return LossOutput(ce + sd, {"cls": ce.detach(), "sd": sd.detach()})

    def eval_modes(self):
        modes = [FIXED, EvalMode("proxy", per_row=False, bn="nearest", eps="proxy")]
        if self.cfg.method.convs == "meta":  # eps only matters to generated kernels
            modes.append(EvalMode("ideal", per_row=True, eps="ideal"))
            if self.cfg.eval.calibrate:
                modes.append(EvalMode("ideal_calib", per_row=True, eps="ideal", calibrate=True))
        return modes
