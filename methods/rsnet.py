"""RS-Net (RS-Nets §3.3): parallel training + multi-resolution ensemble distillation (MRED).

Loss = L_cls + L_ens + L_dis. alpha (S scalars, initialised to ones) is trained only by L_ens, which
sees detached logits; L_dis distils from detached teachers. alpha is kept out of weight decay so that
nothing but L_ens moves it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import losses
from .base import LossOutput
from .parallel import Parallel


class EnsembleWeights(nn.Module):
    def __init__(self, num_resolutions: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(num_resolutions))


class RSNet(Parallel):

    def build(self, num_classes):
        net = super().build(num_classes)
        net.mred = EnsembleWeights(len(self.resolutions))
        return net

    def loss(self, net, logits, labels):
        cls = losses.classification(logits, labels)
        z0 = losses.ensemble_logit(net.mred.alpha, logits)
        ens = F.cross_entropy(z0, labels)
        dis = losses.distillation(self.options.distill, z0, logits)
        return LossOutput(cls + ens + dis, {"cls": cls.detach(), "ens": ens.detach(), "dis": dis.detach()})

    def param_groups(self, net, weight_decay):
        alpha = net.mred.alpha
        rest = [p for p in net.parameters() if p is not alpha and p.requires_grad]
        return [{"params": rest, "weight_decay": weight_decay}, {"params": [alpha], "weight_decay": 0.0}]

    def epoch_metrics(self, net):
        weights = torch.softmax(net.mred.alpha.detach(), dim=0)
        return {f"mred_weight/r{r}_{i}" if self.resolutions.count(r) > 1 else f"mred_weight/r{r}": float(w)
                for i, (r, w) in enumerate(zip(self.resolutions, weights))}
