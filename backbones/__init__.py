"""Backbones built from torchvision definitions, made resolution-switchable by norm-layer injection and conv surgery.

The names below load on first use, so that ``backbones.catalog`` (read by the config schema) can be
imported without torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BACKBONES": "catalog", "ModelConfig": "catalog", "build_net": "build", "MultiResolutionNet": "net",
    "SwitchableBatchNorm2d": "switchable", "MetaConv2d": "switchable", "PrivateConv2d": "switchable",
    "Route": "switchable", "scale_encoding": "switchable", "materialize": "surgery", "recalibrate_bn": "surgery",
    "to_meta_convs": "surgery", "to_private_convs": "surgery", "to_quantized": "surgery",
    "QuantizedConv2d": "quantized", "ActivationQuantizer": "quantized", "ActivationSite": "quantized",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'backbones' has no attribute {name!r}")
    return getattr(importlib.import_module(f"backbones.{_EXPORTS[name]}"), name)
