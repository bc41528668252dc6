"""Module surgery: swap every nn.Conv2d for a switchable conv, and turn a switchable net back into a plain one.

Convs are replaced after torchvision has built and initialised the model and before the optimiser is
built, so torchvision's architecture code stays untouched (the stem, downsample and depthwise convs
included). ``materialize`` goes the other way: for one route it bakes generated kernels and the
selected (or interpolated) BN into plain nn.Conv2d / nn.BatchNorm2d, so inference then costs what a
plain CNN costs and the result can be exported or BN-recalibrated with stock PyTorch. Quantized convs
become plain convs holding their quantized weights; activation quantizers keep the route's levels,
frozen (they quantize, and never move, even in train mode).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn

from .catalog import FULL_PRECISION
from .net import MultiResolutionNet
from .quantized import ActivationQuantizer, ActivationSite, QuantizedConv2d
from .switchable import MetaConv2d, PrivateConv2d, Route, SwitchableBatchNorm2d, scale_encoding


def replace_modules(root: nn.Module, match: Callable[[nn.Module], bool],
                    make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace, in place, every submodule for which ``match`` holds by ``make(old)``; returns the count."""
    count = 0
    for name, child in list(root.named_children()):
        if match(child):
            setattr(root, name, make(child))
            count += 1
        else:
            count += replace_modules(child, match, make)
    return count


def is_conv(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d


def stem_conv(backbone: nn.Module) -> nn.Conv2d | None:
    """The first plain conv in module order: the one that sees the image (ResNets' conv1, MobileNetV2's
    features.0.0)."""
    return next((m for m in backbone.modules() if type(m) is nn.Conv2d), None)


def to_meta_convs(backbone: nn.Module, hidden: int = 0, eps_min: float = scale_encoding(96), stem: bool = True) -> int:
    """``eps_min``: the smallest training resolution's scale encoding (where MLP meta nets start alive).
    ``stem=False`` leaves the first conv a plain conv shared by every resolution, as SAN's reference
    ResNets do (``methods.catalog.san_meta_stem``)."""
    first = None if stem else stem_conv(backbone)
    return replace_modules(backbone, lambda m: is_conv(m) and m is not first,
                           lambda c: MetaConv2d(c, hidden=hidden, eps_min=eps_min))


def to_private_convs(backbone: nn.Module, num_slots: int) -> int:
    return replace_modules(backbone, is_conv, lambda c: PrivateConv2d(c, num_slots=num_slots))


def to_quantized(backbone: nn.Module, weight_bits: int, act_bits: int, act_basis: str = "shared",
                 num_slots: int = 1) -> int:
    """LQ-Nets quantizers (RS-Nets §4.1/§4.2): every plain conv but the first one (the stem, which sees the
    image) gets ``weight_bits``-bit weights; the FC stays full precision. Every ``ActivationSite`` of a
    pre-activation backbone gets an ``act_bits``-bit activation quantizer. 32 bits: left as it is."""
    count = 0
    if weight_bits != FULL_PRECISION:
        first = stem_conv(backbone)
        count += replace_modules(backbone, lambda m: is_conv(m) and m is not first,
                                 lambda c: QuantizedConv2d(c, weight_bits))
    if act_bits != FULL_PRECISION:
        made = replace_modules(backbone, lambda m: type(m) is ActivationSite,
                               lambda _: ActivationQuantizer(act_bits, num_slots, act_basis))
        if made == 0:
            raise ValueError(f"act_bits={act_bits}: {type(backbone).__name__} has no activation quantization "
                             "points; use a pre-activation backbone (preact_*)")
        count += made
    return count


def _plain_bn(bn: SwitchableBatchNorm2d, route: Route) -> nn.BatchNorm2d:
    a, b, w = route.bn
    plain = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                           device=bn.weight.device, dtype=bn.weight.dtype)
    with torch.no_grad():
        gamma, beta, mean, var = bn.mixed(a, b, w)
        plain.weight.copy_(gamma)
        plain.bias.copy_(beta)
        plain.running_mean.copy_(mean)
        plain.running_var.copy_(var)
    return plain


def _bake(module: nn.Module, route: Route) -> nn.Module:
    if isinstance(module, SwitchableBatchNorm2d):
        plain = _plain_bn(module, route)
        # A BN fused with its activation (timm's BatchNormAct2d) is baked back into that layout.
        return module.wrap_plain(plain) if hasattr(module, "wrap_plain") else plain
    if isinstance(module, MetaConv2d):
        return module.materialize(route.eps)
    if isinstance(module, PrivateConv2d):
        return module.materialize(route.conv)
    if isinstance(module, QuantizedConv2d):
        return module.materialize()
    if isinstance(module, ActivationQuantizer):
        return module.materialize(route.conv)
    raise TypeError(type(module))


BAKED = (SwitchableBatchNorm2d, MetaConv2d, PrivateConv2d, QuantizedConv2d, ActivationQuantizer)


def materialize(net: MultiResolutionNet, resolution: float, bn: str = "nearest", eps: str = "proxy",
                slot: int | None = None) -> nn.Module:
    """A plain backbone (no switchable layers) equivalent to ``net`` at this route; ``net`` is untouched."""
    route = net.route(resolution, bn=bn, eps=eps, slot=slot)
    plain = copy.deepcopy(net.backbone)
    replace_modules(plain, lambda m: isinstance(m, BAKED), lambda m: _bake(m, route))
    return plain.train(net.training)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Recompute every BN's running statistics as the exact average over ``batches`` (SAN Table 2).

    Uses PyTorch's cumulative moving average (momentum=None), which after N batches equals the plain
    mean of the N batch means and (unbiased) batch variances.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += 1
    finally:  # a failed recalibration must not leave the model in train mode with momentum=None
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        model.train(was_training)
    if seen == 0:
        raise ValueError("BN recalibration got no batches")
    return model
