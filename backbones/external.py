"""Any CNN of torchvision or timm by name: ``model.backbone: torchvision:<name>`` or ``timm:<name>``.

The library builds its plain model (its own init, no weights: nothing is downloaded) and
``backbones.build`` makes it switchable with the surgery that serves the built-in backbones: private
BN slots swapped in for every BatchNorm (``norm_act``), SAN meta, privatized or quantized convs for
every plain nn.Conv2d, grouped and depthwise ones included. Only BatchNorm is switched, so a network
with another norm layer (LayerNorm, GroupNorm, ...) is refused with the layer and the model named;
so is one whose convs are nn.Conv2d subclasses with their own forward (timm's ``Conv2dSame`` of the
tf_* ports, weight-standardised convs) when SAN or quantization would have to replace them.

``small_input``: the stem conv (the first conv in module order) gets stride 1 and keeps its weight
shape, so a pretrained ``model.init`` still fits; the rest of the network is the library's.
"""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

import torch
import torch.nn as nn

from .catalog import split_external
from .norm_act import is_plain_bn

# torchvision's Inception-style nets return auxiliary logits in training; a switchable net's backbone
# returns logits only.
_TORCHVISION_EXTRA = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}
_FOREIGN_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, nn.LocalResponseNorm,
                  nn.modules.instancenorm._InstanceNorm, nn.modules.batchnorm._BatchNorm)


@functools.lru_cache(maxsize=None)
def library_names(library: str) -> tuple[str, ...]:
    if library == "timm":
        import timm
        return tuple(timm.list_models())
    import torchvision
    return tuple(torchvision.models.list_models(module=torchvision.models))  # the classifiers only


def _known(library: str, model: str) -> bool:
    if library == "timm":
        import timm
        return timm.is_model(model)  # also "resnet50.a1_in1k": a name with a pretrained tag
    return model in library_names(library)


def unknown_name(name: str) -> str | None:
    """The one-line problem with an external name ("timm:resnet10x"), close names suggested; None if known."""
    library, model = split_external(name)
    if _known(library, model):
        return None
    close = difflib.get_close_matches(model, library_names(library), n=5, cutoff=0.6)
    lister = "timm.list_models()" if library == "timm" else "torchvision.models.list_models(torchvision.models)"
    hint = f"close names: {', '.join(close)} ({lister} lists them all)" if close else f"{lister} lists its models"
    return f"{library} has no classifier named {model!r}; {hint}"


def build_plain(name: str, num_classes: int, small_input: bool = False) -> nn.Module:
    """The library's plain model, randomly initialised as the library does."""
    library, model = split_external(name)
    if library == "timm":
        import timm
        net = timm.create_model(model, pretrained=False, num_classes=num_classes)
    else:
        import torchvision
        net = torchvision.models.get_model(model, weights=None, num_classes=num_classes,
                                           **_TORCHVISION_EXTRA.get(model, {}))
    if small_input:
        stem = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        if stem is not None:
            stem.stride = (1, 1)
    return net


@dataclass(frozen=True)
class Scan:
    """What surgery needs to know of a library model: its first foreign norm layer and first conv
    subclass (path, class name), and how many BatchNorm layers it has."""
    foreign_norm: tuple[str, str] | None
    conv_subclass: tuple[str, str] | None
    batch_norms: int


def scan_modules(net: nn.Module) -> Scan:
    foreign = subclass = None
    bns = 0
    for path, m in net.named_modules():
        if is_plain_bn(m):
            bns += 1
        elif foreign is None and _is_foreign_norm(m):
            foreign = (path, type(m).__name__)
        if subclass is None and isinstance(m, nn.Conv2d) and type(m) is not nn.Conv2d:
            subclass = (path, type(m).__name__)
    return Scan(foreign, subclass, bns)


def _is_foreign_norm(m: nn.Module) -> bool:
    if isinstance(m, _FOREIGN_NORMS):
        return True
    # A library's own norm layer (timm's EvoNorm, FrozenBatchNorm2d, ...): named so and holding state.
    owns_state = any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))
    return "Norm" in type(m).__name__ and owns_state


@functools.lru_cache(maxsize=None)
def scan(name: str) -> Scan:
    """``scan_modules`` of the plain model, built on the meta device where the library allows it (no
    memory, no init), on the CPU otherwise (torchvision's RegNets compute widths from tensors)."""
    try:
        with torch.device("meta"):
            return scan_modules(build_plain(name, 1000))
    except (NotImplementedError, RuntimeError):
        return scan_modules(build_plain(name, 1000))


def refusal(name: str, replaces_convs: bool) -> str | None:
    """Why ``name`` cannot be made switchable (one line), or None. ``replaces_convs``: SAN's meta or
    private convs, or quantized convs, will replace every conv."""
    found = scan(name)
    if found.foreign_norm is not None:
        path, kind = found.foreign_norm
        return (f"the model has {kind} layers (first: {path or 'the model itself'}), and resolab switches BatchNorm "
                "only (one BN slot per resolution); pick a BatchNorm CNN (ResNet, ResNeXt, RegNet, EfficientNet, "
                "MobileNetV3, MNASNet, ShuffleNetV2, DenseNet, ...)")
    if found.batch_norms == 0:
        return ("the model has no BatchNorm layer, so there is nothing to switch per resolution; pick a BatchNorm "
                "CNN (a *_bn variant where the library has one)")
    if replaces_convs and found.conv_subclass is not None:
        path, kind = found.conv_subclass
        return (f"the model has {kind} convs (first: {path}) with their own forward, which SAN's generated convs and "
                "quantized convs cannot replace; use method rsnet, parallel or individual at full precision, or a "
                "variant of the model with plain nn.Conv2d (timm: efficientnet_* rather than tf_efficientnet_*)")
    return None


def build_external(name: str, num_classes: int, replaces_convs: bool = False, small_input: bool = False,
                   **_) -> nn.Module:
    """The plain library model, refused (ValueError, one line) where the surgery cannot serve it."""
    if (problem := unknown_name(name)) is not None or (problem := refusal(name, replaces_convs)) is not None:
        raise ValueError(f"model.backbone={name}: {problem}")
    return build_plain(name, num_classes, small_input)
