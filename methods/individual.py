"""I-Net: one model trained at one resolution with plain BN (the papers' baseline, one job per resolution)."""
from __future__ import annotations

from backbones import build_net

from . import losses
from .base import LossOutput, Method, register


@register
class Individual(Method):
    name = "individual"

    def build(self, num_classes):
        m = self.cfg.model
        return build_net(m.backbone, num_classes, self.resolutions, norm="plain", small_input=m.small_input,
                         width=m.width)

    def loss(self, net, logits, labels):
        ce = losses.classification(logits, labels)
        return LossOutput(ce, {"cls": ce.detach()})
