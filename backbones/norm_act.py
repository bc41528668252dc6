"""Private BN slots for a network that a library has already built: every BatchNorm2d swapped for a
``SwitchableBatchNorm2d`` holding the BN's own values in each slot.

The built-in backbones get switchable BN through torchvision's ``norm_layer`` hook; torchvision's and
timm's other CNNs have no such hook (MNASNet, ShuffleNetV2, timm's EfficientNets build their norms
themselves), so their BNs are replaced after the model is built. timm fuses BN, dropout and the
activation into one ``BatchNormAct2d``; ``SwitchableBatchNormAct2d`` keeps that layout, so the
module tree and the state-dict keys stay timm's.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .surgery import replace_modules
from .switchable import SwitchableBatchNorm2d


def is_plain_bn(m: nn.Module) -> bool:
    """nn.BatchNorm2d or timm's BatchNormAct2d (a subclass adding dropout and an activation)."""
    return isinstance(m, nn.BatchNorm2d) and not isinstance(m, SwitchableBatchNorm2d) and (
        type(m) is nn.BatchNorm2d or _is_bn_act(m))


def _is_bn_act(m: nn.Module) -> bool:
    return type(m).__name__ == "BatchNormAct2d" and hasattr(m, "act") and hasattr(m, "drop")


class SwitchableBatchNormAct2d(SwitchableBatchNorm2d):
    """timm's BatchNormAct2d (BN, then dropout, then activation) with one BN slot per resolution."""

    def __init__(self, bn_act: nn.Module, num_slots: int):
        super().__init__(bn_act.num_features, num_slots, eps=bn_act.eps, momentum=bn_act.momentum,
                         device=bn_act.weight.device, dtype=bn_act.weight.dtype)
        self.drop, self.act = bn_act.drop, bn_act.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))

    def wrap_plain(self, plain: nn.BatchNorm2d) -> nn.Module:
        """The baked route as timm's own BatchNormAct2d, so a materialized model is timm's model."""
        from timm.layers import BatchNormAct2d

        out = BatchNormAct2d(plain.num_features, eps=plain.eps, momentum=plain.momentum, apply_act=False,
                             device=plain.weight.device, dtype=plain.weight.dtype)
        out.load_state_dict(plain.state_dict())
        out.drop, out.act = self.drop, self.act
        return out


def switchable_copy(bn: nn.BatchNorm2d, num_slots: int) -> SwitchableBatchNorm2d:
    """A switchable BN whose every slot holds ``bn``'s parameters and running statistics."""
    if not (bn.affine and bn.track_running_stats):
        raise ValueError(f"a {type(bn).__name__} without affine parameters or running statistics cannot have "
                         "private slots; use method.bn: shared")
    if _is_bn_act(bn):
        new = SwitchableBatchNormAct2d(bn, num_slots)
    else:
        new = SwitchableBatchNorm2d(bn.num_features, num_slots, eps=bn.eps, momentum=bn.momentum,
                                    device=bn.weight.device, dtype=bn.weight.dtype)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            getattr(new, name).copy_(getattr(bn, name).expand_as(getattr(new, name)))
    return new.train(bn.training)


def to_switchable_bn(model: nn.Module, num_slots: int) -> int:
    """Replace every BatchNorm2d (and timm BatchNormAct2d) of ``model`` in place; returns the count."""
    return replace_modules(model, is_plain_bn, lambda bn: switchable_copy(bn, num_slots))
