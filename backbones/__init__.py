"""Backbones built from torchvision definitions, made resolution-switchable by norm-layer injection and conv surgery.

``build_net`` is the one entry point: it picks a backbone from ``BACKBONES`` (a one-line registry),
injects plain or switchable BN through torchvision's ``norm_layer`` hook, optionally swaps every conv
for a SAN meta conv or a privatized conv, and wraps the result in a ``MultiResolutionNet``. The FC
layer is always shared.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import torch.nn as nn

from .mobilenet import build_mobilenet_v2
from .net import MultiResolutionNet
from .resnet import build_resnet18, build_resnet50, build_resnet_tiny
from .surgery import materialize, recalibrate_bn, to_meta_convs, to_private_convs
from .switchable import MetaConv2d, PrivateConv2d, Route, SwitchableBatchNorm2d, scale_encoding

BACKBONES = {
    "resnet18": build_resnet18,
    "resnet50": build_resnet50,
    "mobilenet_v2": build_mobilenet_v2,
    "resnet_tiny": build_resnet_tiny,
}
NORMS = ("plain", "private")  # plain = one BN shared by every resolution
CONVS = ("plain", "meta", "private")


def build_net(backbone: str, num_classes: int, resolutions: Sequence[int], *, norm: str = "private",
              convs: str = "plain", meta_hidden: int = 0, small_input: bool = False,
              width: int = 16) -> MultiResolutionNet:
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if convs not in CONVS:
        raise ValueError(f"unknown convs {convs!r}; choose one of {', '.join(CONVS)}")
    slots = len(resolutions)
    norm_layer = partial(SwitchableBatchNorm2d, num_slots=slots) if norm == "private" else nn.BatchNorm2d
    model = BACKBONES[backbone](num_classes=num_classes, norm_layer=norm_layer, small_input=small_input, width=width)
    if convs == "meta":
        to_meta_convs(model, hidden=meta_hidden)
    elif convs == "private":
        to_private_convs(model, num_slots=slots)
    return MultiResolutionNet(model, resolutions)


__all__ = [
    "BACKBONES", "build_net", "MultiResolutionNet", "SwitchableBatchNorm2d", "MetaConv2d", "PrivateConv2d",
    "Route", "scale_encoding", "materialize", "recalibrate_bn", "to_meta_convs", "to_private_convs",
]
