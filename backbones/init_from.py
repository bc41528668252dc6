"""``model.init``: a switchable net filled from a plain model's state dict (README "Pretrained starts").

The plain model is the one the switchable backbone was made from (the same library model, or
resolab's built-in torchvision definitions), so its keys are the switchable backbone's module paths.
Each switchable layer takes its plain counterpart's tensors:

- a BN with private slots: every slot gets the one BN's gamma, beta and running statistics;
- a SAN meta conv: the base kernel b is the conv's kernel, the eps-dependent part (w, or the MLP's
  output layer U) is zero, so W(eps) = b at every scale;
- a privatized conv: every slot's kernel is the conv's kernel;
- a quantized conv: its full-precision weight; the basis is refitted from it at the first step.

So at step 0 the net computes the plain model's logits at every resolution (up to quantization).
A key the file lacks, a key it has that the net does not, or a shape that differs is refused, the
first such key and both shapes named. ``num_batches_tracked`` may be missing (files saved before
PyTorch 0.4.1, as torchvision's first ImageNet weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn as nn

from .quantized import ActivationQuantizer, QuantizedConv2d
from .switchable import MetaConv2d, PrivateConv2d, SwitchableBatchNorm2d

Fill = Callable[[torch.Tensor], None]
OPTIONAL = ("num_batches_tracked",)


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file: torch.save'd (also inside {'state_dict': ...} or {'model': ...},
    and with DDP's 'module.' prefix) or .safetensors. Loaded with weights_only=True: no code runs."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{path}: no such file; give a plain model's state dict (torch.save(model.state_dict(), PATH))")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — torch and safetensors raise many kinds for a bad file
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise ValueError(f"{path} cannot be read as a state dict ({first}); save one with "
                         "torch.save(model.state_dict(), PATH)") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors; save one with torch.save(model.state_dict(), PATH)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _rows(target: torch.Tensor) -> Fill:
    return lambda value: target.copy_(value.expand_as(target))


def _repeat(target: torch.Tensor, slots: int) -> Fill:
    return lambda value: target.copy_(value.repeat(slots, *[1] * (value.dim() - 1)))


def _own_state(module: nn.Module, prefix: str, layout: dict) -> None:
    for name, p in module.named_parameters(recurse=False):
        layout[prefix + name] = (tuple(p.shape), p.data.copy_)
    for name, b in module.named_buffers(recurse=False):
        if b is not None and name not in module._non_persistent_buffers_set:
            layout[prefix + name] = (tuple(b.shape), b.copy_)


def plain_layout(module: nn.Module, prefix: str = "", layout: dict | None = None) -> dict[str, tuple[tuple, Fill]]:
    """Every key of the plain model's state dict: its shape there, and how it fills this net."""
    layout = {} if layout is None else layout
    if isinstance(module, SwitchableBatchNorm2d):
        c = (module.num_features,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[prefix + name] = (c, _rows(getattr(module, name).data))
        layout[prefix + "num_batches_tracked"] = ((), _rows(module.num_batches_tracked))
    elif isinstance(module, MetaConv2d):
        # The eps-dependent part (w, or the MLP's U) is zeroed with the base: every scale gets the plain kernel.
        eps_part = module.scale if module.hidden == 0 else module.out
        layout[prefix + "weight"] = (module.weight_shape, lambda value: (module.base.data.copy_(value),
                                                                         eps_part.data.zero_()))
        if module.bias is not None:
            layout[prefix + "bias"] = ((module.out_channels,), module.bias.data.copy_)
        return layout
    elif isinstance(module, PrivateConv2d):
        layout[prefix + "weight"] = (module.weight_shape, _repeat(module.weight.data, module.num_slots))
        if module.bias is not None:
            layout[prefix + "bias"] = ((module.out_channels,), _repeat(module.bias.data, module.num_slots))
        return layout
    elif isinstance(module, QuantizedConv2d):
        # Its basis stays LQ-Nets' initial one: the first refit (zero-debiased) replaces it by the fit to these weights.
        for name, p in module.named_parameters(recurse=False):
            layout[prefix + name] = (tuple(p.shape), p.data.copy_)
        return layout
    elif isinstance(module, ActivationQuantizer):
        return layout  # no plain counterpart: its levels start as LQ-Nets' and follow the batches
    else:
        _own_state(module, prefix, layout)
    for name, child in module.named_children():
        plain_layout(child, f"{prefix}{name}.", layout)
    return layout


def _shape(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


@torch.no_grad()
def load_plain_state(backbone: nn.Module, state: Mapping[str, torch.Tensor], what: str = "the file") -> None:
    """Fill ``backbone`` (a switchable net's backbone) from a plain model's ``state``; ValueError names
    the first key that does not fit."""
    layout = plain_layout(backbone)
    for key, (shape, _) in layout.items():
        if key not in state and key.rsplit(".", 1)[-1] not in OPTIONAL:
            raise ValueError(f"{what} has no {key!r} (shape {_shape(shape)} in the net); it must be the state "
                             "dict of the same plain model (same backbone, num_classes and small_input)")
        if key in state and tuple(state[key].shape) != tuple(shape):
            raise ValueError(f"{key!r} has shape {_shape(state[key].shape)} in {what} but {_shape(shape)} in the net; "
                             "save the state dict of the same plain model (same backbone, num_classes and "
                             "small_input)")
    extra = [k for k in state if k not in layout]
    if extra:
        raise ValueError(f"{what} has {extra[0]!r} (shape {_shape(state[extra[0]].shape)}), which the net has not; "
                         "it must be the state dict of the same plain model (same backbone and library naming)")
    for key, (_, fill) in layout.items():
        if key in state:
            fill(state[key])


def init_from_file(net: nn.Module, path: str, error: type[Exception] = ValueError) -> nn.Module:
    """``model.init``: load ``path`` into ``net.backbone``; a problem is raised as ``error`` (one line)."""
    try:
        load_plain_state(net.backbone, read_state_file(path), what=f"model.init={path}")
    except ValueError as exc:
        raise error(str(exc)) from None
    return net
