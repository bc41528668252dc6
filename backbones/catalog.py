"""Every backbone by name, and the model settings: the one list that ``build_net``, the config schema
and the config hash read. Torch-free, so that reading a config does not import torch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Backbone:
    builder: str  # "module:function", imported only when a net is built
    # The ``model.*`` settings, beyond backbone and small_input, that change this net (and so its
    # config hash); the others are inert for it.
    reads: tuple[str, ...] = ()


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone("backbones.resnet:build_resnet18"),
    "resnet50": Backbone("backbones.resnet:build_resnet50"),
    "mobilenet_v2": Backbone("backbones.mobilenet:build_mobilenet_v2", reads=("width_mult", "dropout")),
    "resnet_tiny": Backbone("backbones.resnet:build_resnet_tiny", reads=("width",)),
}

ALWAYS_READ = ("backbone", "small_input")

# One word for the BN choice everywhere: one BN slot per training resolution, or one shared by all.
BN_CHOICES = ("private", "shared")
BnChoice = Literal["private", "shared"]


class ModelConfig(BaseModel):
    """The ``model:`` section of a job config."""
    model_config = ConfigDict(extra="forbid", strict=True)

    backbone: Literal[tuple(BACKBONES)] = "resnet_tiny"  # type: ignore[valid-type]
    # 3x3 stride-1 stem and no max-pool, for 16-64 px data; ImageNet stem otherwise.
    small_input: bool = False
    width: int = Field(16, gt=0)  # channels of the first stage; resnet_tiny only
    # Channel multiplier (torchvision's width_mult: RS-Nets Table 4's I-Nets-w); mobilenet_v2 only.
    width_mult: float = Field(1.0, gt=0)
    # Dropout before the classifier; mobilenet_v2 only. 0 as in both papers' reference code
    # (torchvision's own default is 0.2).
    dropout: float = Field(0.0, ge=0, lt=1)
