"""Every method by name, with the switches it reads: the one list that ``build_method``, the config
schema (the ``method:`` section), the accepted choices and the config hash are derived from.

A method's options are the keys it reads under ``method.`` in a config; only they (and the method's
name) enter its config hash, so a switch a method never reads cannot split two identical jobs. Two
methods that read a switch of the same name must declare it with the same type and default (the
schema checks). Torch-free, so that reading a config does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backbones.catalog import BnChoice


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class IndividualOptions(Options):
    """I-Nets read no switch: one plain-BN model per resolution."""


class ParallelOptions(Options):
    bn: BnChoice = "private"  # private BN per training resolution, or one shared BN (ablation)


class RSNetOptions(ParallelOptions):
    distill: Literal["none", "vanilla", "full", "from_largest", "from_models"] = "full"  # MRED variant (Table 5)


class SANOptions(Options):
    bn: BnChoice = "private"
    scale_distill: bool = True  # scale distillation (SAN Table 3 "w/o SD" = false)
    meta_hidden: int = Field(0, ge=0)  # 0 = linear meta net b + eps*w; 8 or 16 = MLP with ReLU (Table 5)
    convs: Literal["meta", "private"] = "meta"  # meta-generated convs, or one private conv per resolution (Table 4)
    # With meta convs, whether the first conv (the stem, which sees the image) is generated too. None:
    # as SAN's reference code does for the backbone (``san_meta_stem``); true: every conv generated,
    # as resolab did before this switch existed; false: the stem is one plain conv shared by all
    # resolutions. The paper does not say.
    meta_stem: bool | None = None


# Backbones whose stem SAN's reference code (d-li14/SAN) generates from the scale: its MobileNetV2's
# first conv is a meta conv like every other (``conv_3x3_bn`` holds an ``nn.Linear(1, numel)``), while
# its ResNets keep ``conv1`` a plain conv shared by every resolution (``meta_resnet.py``). resolab's own
# ResNets (resnet_tiny, preact_*) follow the reference's ResNets.
SAN_REFERENCE_META_STEM = ("mobilenet_v2",)


def san_meta_stem(setting: bool | None, backbone: str) -> bool:
    """Whether a SAN with meta convs generates its stem: ``method.meta_stem``, or the reference's choice."""
    return backbone in SAN_REFERENCE_META_STEM if setting is None else setting


@dataclass(frozen=True)
class MethodEntry:
    implementation: str  # "module:Class", imported only when a model is built
    options: type[Options]


METHODS: dict[str, MethodEntry] = {
    "individual": MethodEntry("methods.individual:Individual", IndividualOptions),
    "parallel": MethodEntry("methods.parallel:Parallel", ParallelOptions),
    "rsnet": MethodEntry("methods.rsnet:RSNet", RSNetOptions),
    "san": MethodEntry("methods.san:SAN", SANOptions),
}
