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
