"""``build_net``: a backbone made resolution-switchable by norm-layer injection and conv surgery.

It is the one entry point: it picks a backbone from ``catalog.BACKBONES`` (a one-line
registry), injects shared or private (switchable) BN through torchvision's ``norm_layer`` hook, optionally swaps every conv
for a SAN meta conv (the stem too unless ``meta_stem=False``) or a privatized conv, or quantizes convs and activations (LQ-Nets), and wraps the result in a ``MultiResolutionNet``. The FC
layer is always shared. A ``torchvision:``/``timm:`` backbone is built by its library and gets its private
BN slots by replacing its BNs (``external``, ``norm_act``); the conv surgery is the same.
"""
from __future__ import annotations

import importlib
from functools import partial
from typing import Sequence

import torch.nn as nn

from .catalog import BACKBONES, BIT_CHOICES, BN_CHOICES, FULL_PRECISION, backbone_entry, split_external
from .external import build_external
from .net import MultiResolutionNet
from .norm_act import to_switchable_bn
from .surgery import to_meta_convs, to_private_convs, to_quantized
from .switchable import SwitchableBatchNorm2d, scale_encoding

CONVS = ("plain", "meta", "private")


def build_net(backbone: str, num_classes: int, resolutions: Sequence[int], *, bn: str = "private",
              convs: str = "plain", meta_hidden: int = 0, meta_stem: bool = True, small_input: bool = False,
              width: int = 16, width_mult: float = 1.0, dropout: float = 0.0, weight_bits: int = FULL_PRECISION,
              act_bits: int = FULL_PRECISION, act_basis: str = "shared",
              zero_init_residual: bool = False) -> MultiResolutionNet:
    if backbone_entry(backbone) is None:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}, "
                         "or torchvision:<name> / timm:<name>")
    if bn not in BN_CHOICES:
        raise ValueError(f"unknown bn {bn!r}; choose one of {', '.join(BN_CHOICES)}")
    if convs not in CONVS:
        raise ValueError(f"unknown convs {convs!r}; choose one of {', '.join(CONVS)}")
    for name, bits in (("weight_bits", weight_bits), ("act_bits", act_bits)):
        if bits not in BIT_CHOICES:
            raise ValueError(f"{name}={bits!r}: choose 1..8, or {FULL_PRECISION} for full precision")
    if convs != "plain" and (weight_bits, act_bits) != (FULL_PRECISION, FULL_PRECISION):
        raise ValueError(f"quantization needs plain convs, got convs={convs!r}")
    slots = len(resolutions)
    if split_external(backbone):
        replaces_convs = convs != "plain" or weight_bits != FULL_PRECISION
        model = build_external(backbone, num_classes, replaces_convs=replaces_convs, small_input=small_input)
        if bn == "private":
            to_switchable_bn(model, slots)
    else:
        norm_layer = partial(SwitchableBatchNorm2d, num_slots=slots) if bn == "private" else nn.BatchNorm2d
        module_name, function = BACKBONES[backbone].builder.split(":")
        builder = getattr(importlib.import_module(module_name), function)
        model = builder(num_classes=num_classes, norm_layer=norm_layer, small_input=small_input, width=width,
                        width_mult=width_mult, dropout=dropout, zero_init_residual=zero_init_residual)
    if convs == "meta":
        to_meta_convs(model, hidden=meta_hidden, eps_min=scale_encoding(min(resolutions)), stem=meta_stem)
    elif convs == "private":
        to_private_convs(model, num_slots=slots)
    # After torchvision's init (the weight basis starts from the initialised weights' scale).
    to_quantized(model, weight_bits, act_bits, act_basis, num_slots=slots)
    return MultiResolutionNet(model, resolutions)
