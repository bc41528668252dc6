"""I-Net: one model trained at one resolution with plain BN (the papers' baseline, one job per resolution)."""
from __future__ import annotations

from backbones import build_net

from . import losses
from .base import LossOutput, Method


class Individual(Method):

    def build(self, num_classes):
        return build_net(self.model.backbone, num_classes, self.resolutions, bn="shared", **self.build_net_kwargs())

    def loss(self, net, logits, labels):
        ce = losses.classification(logits, labels)
        return LossOutput(ce, {"cls": ce.detach()})
