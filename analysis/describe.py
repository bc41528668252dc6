"""``resolab describe``: parameter count, MAdds and storage of a method's model, as in RS-Nets Tables 2 and 3."""
from __future__ import annotations

import math
from typing import Sequence

import torch.nn as nn

from backbones import QuantizedConv2d
from backbones.catalog import FULL_PRECISION
from backbones.complexity import count_madds, count_params
from jobspec import JobConfig
from methods import build_method

BITS_PER_FLOAT = 32


def validated(cfg: JobConfig) -> JobConfig:
    """``cfg`` checked as the jobs it describes would be. An I-Net set (``individual`` over several
    resolutions) is no one job, a suite expands it into one job per resolution, so each of those
    one-resolution configs is validated in its place; any other config is validated as it is."""
    resolutions = list(cfg.data.resolutions)
    if cfg.method.name != "individual" or len(resolutions) < 2:
        return cfg.validate()
    if resolutions != sorted(resolutions, reverse=True):
        cfg.validate()  # its ConfigError says how to order them
    tree = cfg.to_dict()
    for r in resolutions:
        JobConfig.parse({**tree, "data": {**tree["data"], "resolutions": [r]}}).validate()
    return cfg


def describe(cfg: JobConfig, num_classes: int) -> dict:
    """A set of I-Nets counts all its models (one per resolution); one switchable model counts once.
    ``model_params`` holds each model's own count (one entry for a switchable model)."""
    resolutions = list(cfg.data.resolutions)
    individual = cfg.method.name == "individual"
    models = []
    for res in (resolutions if individual else [None]):
        models.append((res, build_method(cfg.method, cfg.model, [res] if res else resolutions).build(num_classes)))
    model_params = [count_params(net) for _, net in models]
    total = sum(model_params)
    madds = {}
    for r in resolutions:
        net = next(n for res, n in models if res in (None, r))
        madds[str(r)] = count_madds(net, r)
    nets = [net for _, net in models]
    return {"backbone": cfg.model.backbone, "method": cfg.method.name, "resolutions": resolutions,
            "num_classes": num_classes, "models": len(models), "total_params": total,
            "model_params": model_params,
            "total_params_M": round(total / 2**20, 2), "madds": madds,
            "weight_bits": cfg.model.weight_bits, "act_bits": cfg.model.act_bits,
            "storage_bits": round(storage_bits(cfg.model.weight_bits, len(models)), 2),
            "size_MB": round(size_bytes(nets) / 2**20, 2)}


def storage_bits(weight_bits: int, models: int) -> float:
    """Bits per quantized conv weight a set of ``models`` needs (RS-Nets §4.1/§4.2 and footnote 4).

    A K-bit channel holds 2^K values. Models trained apart have their own bases, so a set of n of them
    holds n · 2^K distinct values per channel position: log2(n · 2^K) bits (five 2-bit I-Nets: log2(20)
    ≈ 4.3). One RS-Net shares its convs, so one basis per channel: K bits. Full precision: 32.
    ``measured_storage_bits`` counts the same from trained weights.
    """
    if weight_bits == FULL_PRECISION:
        return float(FULL_PRECISION)
    return math.log2(models * 2 ** weight_bits)


def measured_storage_bits(nets: Sequence[nn.Module]) -> float:
    """log2 of the most distinct quantized values any output channel takes across ``nets`` (same
    architecture; the conv at one position in every net). 32 if no conv is quantized."""
    per_net = [[m for m in net.modules() if isinstance(m, QuantizedConv2d)] for net in nets]
    most = 0
    for convs in zip(*per_net):
        weights = [c.quantized_weight().reshape(c.out_channels, -1) for c in convs]
        for channel in range(convs[0].out_channels):
            values = set()
            for w in weights:
                values.update(w[channel].tolist())
            most = max(most, len(values))
    return math.log2(most) if most else float(FULL_PRECISION)


def size_bytes(nets: Sequence[nn.Module]) -> float:
    """Bytes the models take as stored: each quantized conv weight at its bit width plus its bases, and
    every other parameter (first conv, BN, FC, RS-Net's alpha) as fp32. Each model stores its own 2-bit
    codes and bases; BN statistics (buffers) are not counted, as the parameter counts do not count them."""
    total_bits = 0
    for net in nets:
        quantized = {id(m.weight): m for m in net.modules() if isinstance(m, QuantizedConv2d)}
        for p in net.parameters():
            conv = quantized.get(id(p))
            total_bits += p.numel() * (conv.bits if conv is not None else BITS_PER_FLOAT)
        total_bits += sum(m.basis.numel() for m in quantized.values()) * BITS_PER_FLOAT
    return total_bits / 8
