"""What a training method is: the one interface every method plugs into the loop the same way.

The loop (``orchestrator/engine/loop.py``) never branches on a method's name. Per step it does:

    logits = net(batch_inputs)                      # one forward over every training resolution
    out = method.loss(net, logits, labels)          # LossOutput: total + named terms
    out.total.backward(); optimizer.step()          # one backward, one optimiser step

and for evaluation it asks ``method.eval_modes(calibrate)`` which inference routes to measure.
A method reads only its declared options (``methods.catalog``), the model settings and the training
resolutions, never the rest of a job's config.
Method-owned state (RS-Net's alpha, SAN's meta nets) lives inside the net built by ``build``, so it is
checkpointed, optimised and synchronised by DDP like any other parameter.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from backbones import ModelConfig, MultiResolutionNet

from .catalog import METHODS, Options


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
    """Base class; subclasses override ``build`` and ``loss``, and are listed in ``methods.catalog``."""

    def __init__(self, options: Options, model: ModelConfig, resolutions: Sequence[int]):
        self.options = options
        self.model = model
        self.resolutions = list(resolutions)

    def build_net_kwargs(self) -> dict:
        """The model settings every method passes to ``build_net``."""
        m = self.model
        return dict(small_input=m.small_input, width=m.width, width_mult=m.width_mult, dropout=m.dropout,
                    weight_bits=m.weight_bits, act_bits=m.act_bits, act_basis=m.act_basis,
                    zero_init_residual=m.zero_init_residual)

    def build(self, num_classes: int) -> MultiResolutionNet:
        raise NotImplementedError

    def build_initialised(self, num_classes: int, error: type[Exception] = ValueError) -> MultiResolutionNet:
        """``build``, then ``model.init``'s plain weights loaded when it is set (``backbones.init_from``);
        a file that does not fit is raised as ``error``, one line naming the first key that differs."""
        net = self.build(num_classes)
        if self.model.init:
            from backbones.init_from import init_from_file
            init_from_file(net, self.model.init, error)
        return net

    def loss(self, net: MultiResolutionNet, logits: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    def eval_modes(self, calibrate: bool) -> list[EvalMode]:
        """The inference routes to measure; ``calibrate``: include BN-recalibrating ones (eval.calibrate)."""
        return [FIXED]

    def param_groups(self, net: nn.Module, weight_decay: float) -> list[dict]:
        return [{"params": [p for p in net.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def epoch_metrics(self, net: MultiResolutionNet) -> dict[str, float]:
        """Method state worth plotting per epoch (e.g. softmax(alpha))."""
        return {}


def build_method(method, model: ModelConfig, resolutions: Sequence[int]) -> Method:
    """The method named ``method.name``, reading its declared options from ``method`` (a job config's
    ``method:`` section, or any object with those attributes)."""
    try:
        entry = METHODS[method.name]
    except KeyError:
        raise ValueError(f"unknown method {method.name!r}; choose one of {', '.join(METHODS)}") from None
    options = entry.options(**{key: getattr(method, key) for key in entry.options.model_fields})
    module_name, class_name = entry.implementation.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(options, model, resolutions)
