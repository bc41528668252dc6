"""SAN (Li et al.): meta-network-generated convs + private BN + scale distillation.

Ablations: ``method.scale_distill=false`` (Table 3 w/o SD), ``method.bn=shared`` (Table 3),
``method.convs=private`` (Table 4: one conv per resolution instead of the meta net),
``method.meta_hidden=8|16`` (Table 5: an MLP meta net), ``method.meta_stem`` (whether the first conv is
generated too; by default as the reference code does per backbone: a plain shared conv in its ResNets,
a meta conv in its MobileNetV2).
"""
from __future__ import annotations

from backbones import build_net

from . import losses
from .base import FIXED, EvalMode, LossOutput, Method
from .catalog import san_meta_stem


class SAN(Method):

    def build(self, num_classes):
        opts = self.options
        return build_net(self.model.backbone, num_classes, self.resolutions, bn=opts.bn, convs=opts.convs,
                         meta_hidden=opts.meta_hidden, meta_stem=san_meta_stem(opts.meta_stem, self.model.backbone),
                         **self.build_net_kwargs())

    def loss(self, net, logits, labels):
        ce = losses.classification(logits, labels)
        if not self.options.scale_distill:
            return LossOutput(ce, {"cls": ce.detach()})
        sd = losses.scale_distillation(logits, self.resolutions)
        return LossOutput(ce + sd, {"cls": ce.detach(), "sd": sd.detach()})

    def eval_modes(self, calibrate):
        modes = [FIXED, EvalMode("proxy", per_row=False, bn="nearest", eps="proxy")]
        if self.options.convs == "meta":  # eps only matters to generated kernels
            modes.append(EvalMode("ideal", per_row=True, eps="ideal"))
            if calibrate:
                modes.append(EvalMode("ideal_calib", per_row=True, eps="ideal", calibrate=True))
        return modes
