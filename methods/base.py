"""What a training method is: the one interface every method plugs into the loop the same way.

The loop (``orchestrator/loop.py``) never branches on a method's name. Per step it does:

    logits = net(batch_inputs)                      # one forward over every training resolution
    out = method.loss(net, logits, labels)          # LossOutput: total + named terms
    out.total.backward(); optimizer.step()          # one backward, one optimiser step

and for evaluation it asks ``method.eval_modes()`` which inference routes to measure.
Method-owned state (RS-Net's alpha, SAN's meta nets) lives inside the net built by ``build``, so it is
checkpointed, optimised and synchronised by DDP like any other parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from backbones import MultiResolutionNet
from orchestrator.schema import JobConfig


@dataclass
class LossOutput:
    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # detached, for logging


@dataclass(frozen=True)
class EvalMode:
    """One way of running the trained net at a test resolution T.

    per_row: one matrix row per training resolution (that slot's BN, and eps unless ``eps='ideal'``);
             otherwise one "adaptive" row whose route is chosen from T alone.
    calibrate: recompute BN statistics on training images at T before evaluating (SAN Table 2).
    """
    name: str
    per_row: bool
    bn: str = "nearest"
    eps: str = "proxy"
    calibrate: bool = False


FIXED = EvalMode("fixed", per_row=True)


class Method:
    """Base class; subclasses set ``name`` and override ``build`` and ``loss``."""

    name: ClassVar[str]

    def __init__(self, cfg: JobConfig):
        self.cfg = cfg
        self.resolutions = list(cfg.data.resolutions)

    def build(self, num_classes: int) -> MultiResolutionNet:
        raise NotImplementedError

    def loss(self, net: MultiResolutionNet, logits: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    def eval_modes(self) -> list[EvalMode]:
        return [FIXED]

    def param_groups(self, net: nn.Module, weight_decay: float) -> list[dict]:
        return [{"params": [p for p in net.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def epoch_metrics(self, net: MultiResolutionNet) -> dict[str, float]:
        """Method state worth plotting per epoch (e.g. softmax(alpha))."""
        return {}


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def build_method(cfg: JobConfig) -> Method:
    try:
        return METHODS[cfg.method.name](cfg)
    except KeyError:
        raise ValueError(f"unknown method {cfg.method.name!r}; choose one of {', '.join(METHODS)}") from None
