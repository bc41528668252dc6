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
    "resnet18": Backbone("backbones.resnet:build_resnet18", reads=("zero_init_residual",)),
    "resnet50": Backbone("backbones.resnet:build_resnet50", reads=("zero_init_residual",)),
    "mobilenet_v2": Backbone("backbones.mobilenet:build_mobilenet_v2", reads=("width_mult", "dropout")),
    "resnet_tiny": Backbone("backbones.resnet:build_resnet_tiny", reads=("width", "zero_init_residual")),
    # Pre-activation ResNets in LQ-Nets' layout (backbones/preact.py): the only ones with activation
    # quantization points, so the only ones that read act_bits / act_basis.
    "preact_resnet18": Backbone("backbones.preact:build_preact_resnet18", reads=("act_bits", "act_basis")),
    "preact_resnet50": Backbone("backbones.preact:build_preact_resnet50", reads=("act_bits", "act_basis")),
    "preact_resnet_tiny": Backbone("backbones.preact:build_preact_resnet_tiny", reads=("width", "act_bits", "act_basis")),
}

# Any CNN of torchvision or timm by name ("timm:resnet10t", "torchvision:mobilenet_v3_small"): the
# library builds it and module surgery makes it switchable (backbones/external.py). They read no
# model setting beyond ALWAYS_READ: the library's own defaults build them.
EXTERNAL_LIBRARIES = ("torchvision", "timm")
EXTERNAL = Backbone("backbones.external:build_external")


def split_external(name: str) -> tuple[str, str] | None:
    """("timm", "resnet10t") for "timm:resnet10t"; None for a built-in or malformed name."""
    library, sep, model = str(name).partition(":")
    return (library, model) if sep and library in EXTERNAL_LIBRARIES and model else None


def backbone_entry(name: str) -> Backbone | None:
    """The catalog entry of a built-in backbone or of any torchvision:/timm: name; None if neither."""
    return BACKBONES.get(name) or (EXTERNAL if split_external(name) else None)


# model.init (a plain model's state dict, README "Pretrained starts") is read by every backbone.
ALWAYS_READ = ("backbone", "small_input", "weight_bits", "init")

# Quantization (RS-Nets §4.1/§4.2, LQ-Nets): K bits with a learned basis; 32 = full precision ("W2/A32").
FULL_PRECISION = 32
BIT_CHOICES = (1, 2, 3, 4, 5, 6, 7, 8, FULL_PRECISION)
Bits = Literal[BIT_CHOICES]  # type: ignore[valid-type]
# Activation basis under several resolutions: one shared by all (default), one per resolution, or the
# reference's fixed_qa (one basis, updated only at the largest resolution).
ACT_BASIS_CHOICES = ("shared", "private", "fixed")


def act_quant_backbones() -> list[str]:
    """Backbones whose activations can be quantized (they read model.act_bits)."""
    return [name for name, b in BACKBONES.items() if "act_bits" in b.reads]

# One word for the BN choice everywhere: one BN slot per training resolution, or one shared by all.
BN_CHOICES = ("private", "shared")
BnChoice = Literal["private", "shared"]


class ModelConfig(BaseModel):
    """The ``model:`` section of a job config."""
    model_config = ConfigDict(extra="forbid", strict=True)

    # A name of BACKBONES, or torchvision:<name> / timm:<name> (checked by JobConfig.parse, which
    # suggests close names of that library).
    backbone: str = "resnet_tiny"
    # 3x3 stride-1 stem and no max-pool, for 16-64 px data; ImageNet stem otherwise.
    small_input: bool = False
    width: int = Field(16, gt=0)  # channels of the first stage; resnet_tiny only
    # Channel multiplier (torchvision's width_mult: RS-Nets Table 4's I-Nets-w); mobilenet_v2 only.
    width_mult: float = Field(1.0, gt=0)
    # Dropout before the classifier; mobilenet_v2 only. 0 as in both papers' reference code
    # (torchvision's own default is 0.2).
    dropout: float = Field(0.0, ge=0, lt=1)
    # Start every residual block's last BN at gamma = 0, so each block begins as the identity
    # (Goyal et al. 2017; torchvision's zero_init_residual, on by default in timm's ResNets). Off by
    # default, as in torchvision; ResNets only (resnet18, resnet50, resnet_tiny).
    zero_init_residual: bool = False
    # Bits of every conv weight but the first (the FC stays full precision, as in LQ-Nets); 32 = none.
    weight_bits: Bits = FULL_PRECISION  # type: ignore[valid-type]
    # Bits of every conv input but the image's; pre-activation backbones only (preact_*); 32 = none.
    act_bits: Bits = FULL_PRECISION  # type: ignore[valid-type]
    # "shared" by default: it is the reference code's default (fixed_qa off), the setting its Table 3
    # numbers come from, and the one that makes an RS-Net a single quantized model (one set of
    # activation levels, as one set of weight levels). Every quantizer follows a BN + ReLU, and private
    # BN already evens out the per-resolution statistics before it.
    act_basis: Literal[ACT_BASIS_CHOICES] = "shared"  # type: ignore[valid-type]
    # A plain model's state dict file (torch.save of model.state_dict(), torchvision or timm naming, or
    # .safetensors) to start from: every BN slot starts from the one BN, SAN's base kernels from the
    # convs with eps-weights at zero, so at step 0 the net is that model at every resolution. Its
    # sha256, not its path, enters the config hash. The file must be readable where the jobs run.
    init: str | None = None
