"""Layers whose behaviour depends on the active input resolution.

A model trained on resolutions S = (S_1 > ... > S_k) owns k "slots". Which slot (or which mix of two
slots, or which scale encoding) a layer uses is a ``Route``, pushed into every switchable layer by
``MultiResolutionNet.at_resolution``; there is no global state. A switchable layer asked to run
with no route set raises, so a forgotten switch cannot silently use slot 0.

- ``SwitchableBatchNorm2d``: private BN per training resolution (RS-Nets eq. 3). It *is* a
  ``nn.BatchNorm2d`` whose weight/bias/running stats carry a leading slot dimension, so torchvision's
  ``isinstance(m, nn.BatchNorm2d)`` init and ``zero_init_residual`` apply to every slot at once, and
  DDP sees one parameter per layer that always receives a gradient.
- ``MetaConv2d``: SAN's conv whose kernel is generated from the scale encoding eps = S / 320 by a
  linear meta net (W = b + eps * w) or an MLP with ReLU.
- ``PrivateConv2d``: one kernel per training resolution (SAN Table 4 ablation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

SCALE_NORMALISER = 320.0  # SAN §3.1: eps = 0.1 * S / 32


def scale_encoding(resolution: float) -> float:
    return resolution / SCALE_NORMALISER


@dataclass(frozen=True)
class Route:
    """What the switchable layers use for one forward pass.

    bn: (slot_a, slot_b, weight_b) — BN parameters and statistics are (1 - w) * slot_a + w * slot_b;
        w = 0 selects slot_a alone.
    eps: scale encoding fed to meta convs.
    conv: slot of privatized convs.
    """
    bn: tuple[int, int, float]
    eps: float
    conv: int


class Switchable:
    """Mixin: holds the route set by the owning network; raises if used without one."""

    _route: Route | None = None

    def set_route(self, route: Route | None) -> None:
        self._route = route

    def route(self) -> Route:
        if self._route is None:
            raise RuntimeError(
                f"{type(self).__name__} ran with no resolution selected; call the model as "
                "model(x, resolution=r) or inside `with model.at_resolution(r):`")
        return self._route


class SwitchableBatchNorm2d(Switchable, nn.BatchNorm2d):
    """BatchNorm2d with one set of (gamma, beta, running mean, running var) per training resolution."""

    def __init__(self, num_features: int, num_slots: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 device=None, dtype=None):
        nn.BatchNorm2d.__init__(self, num_features, eps=eps, momentum=momentum, device=device, dtype=dtype)
        self.num_slots = num_slots
        # Re-shape every per-channel tensor to (slots, C); nn.BatchNorm2d's own reset fills them.
        self.weight = nn.Parameter(self.weight.detach().repeat(num_slots, 1))
        self.bias = nn.Parameter(self.bias.detach().repeat(num_slots, 1))
        self.running_mean = self.running_mean.repeat(num_slots, 1)
        self.running_var = self.running_var.repeat(num_slots, 1)
        self.num_batches_tracked = torch.zeros(num_slots, dtype=torch.long, device=self.running_mean.device)

    def _check_input_dim(self, x):
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, w = self.route().bn
        if w == 0.0:
            if self.training:
                # Rows of the (slots, C) buffers are contiguous views: batch_norm updates them in place.
                self.num_batches_tracked[a] += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked[a])
                return F.batch_norm(x, self.running_mean[a], self.running_var[a], self.weight[a], self.bias[a],
                                    True, momentum, self.eps)
            return F.batch_norm(x, self.running_mean[a], self.running_var[a], self.weight[a], self.bias[a],
                                False, 0.0, self.eps)
        if self.training:
            raise RuntimeError("interpolated BN is an inference-time route; train at a training resolution")
        gamma, beta, mean, var = self.mixed(a, b, w)
        return F.batch_norm(x, mean, var, gamma, beta, False, 0.0, self.eps)

    def mixed(self, a: int, b: int, w: float):
        """Linear interpolation of affine parameters and statistics between two slots (RS-Nets Fig. 4)."""
        lerp = lambda t: (1.0 - w) * t[a] + w * t[b]  # noqa: E731
        return lerp(self.weight), lerp(self.bias), lerp(self.running_mean), lerp(self.running_var)

    def extra_repr(self):
        return f"{self.num_features}, slots={self.num_slots}, eps={self.eps}, momentum={self.momentum}"


def _conv_init_(weight: torch.Tensor) -> torch.Tensor:
    # torchvision's ResNet/MobileNetV2 conv init: kaiming normal, fan_out, relu.
    return nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


def _place_kinks_(layer: nn.Linear, eps_min: float) -> nn.Linear:
    """Hidden unit k computes relu(eps - k * eps_min / H): slope 1, kinks evenly spaced in [0, eps_min).

    PyTorch's default init of a 1-input layer (V, c ~ U(-1, 1)) puts a unit's kink -c/V anywhere and
    its slope either way, so about 45% of the units are zero over the whole training range (eps in
    [0.3, 0.7] for 224...96). Such a unit passes no gradient to U, V or c: it is dead for good, and the
    MLP of SAN Table 5 is narrower than its name. With every kink below the smallest training eps and
    a positive slope, each unit is active at every training resolution; the nearest kinks sit just
    below the range, so a small change of c moves them into it, where the MLP bends. Slope 1 keeps
    the hidden activations on the scale of eps itself, the factor that the linear meta net's w gets.
    """
    hidden = layer.out_features
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.copy_(-eps_min * torch.arange(hidden, dtype=layer.bias.dtype) / hidden)
    return layer


class _ConvGeometry(nn.Module):
    """Stride/padding/groups of the conv a switchable conv replaces; forward runs F.conv2d with a kernel."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError("only zero-padded convs can be made switchable")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.weight_shape = tuple(conv.weight.shape)

    def conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def as_plain_conv(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=bias is not None,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.data.copy_(weight)
        if bias is not None:
            conv.bias.data.copy_(bias)
        return conv

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}")


@dataclass(frozen=True)
class _KernelRecipe:
    """What a meta conv saves for its backward instead of the generated kernel (see MetaConv2d)."""
    eps: float
    dtype: torch.dtype
    versions: tuple[int, ...]


class MetaConv2d(Switchable, _ConvGeometry):
    """A conv whose kernel a per-layer meta network generates from the scale encoding (SAN §3.1).

    hidden == 0: W = b + eps * w, two tensors of the kernel's shape (SAN eq. 2).
    hidden > 0:  W = b + U relu(V eps + c), an MLP with ``hidden`` units (SAN Table 5).
    Initialisation: b takes the wrapped conv's kernel (the backbone's usual init) and the eps-dependent
    part (w, or U) starts at zero, so at step 0 every resolution sees that normally initialised kernel
    (the reference code's U(-1, 1) init of the meta layers gives kernels far off the usual scale). The
    MLP's hidden units start alive at every training eps (``_place_kinks_``); ``eps_min`` is the
    smallest training resolution's eps.
    The kernel is generated once per forward call, i.e. once per step per resolution, never per sample,
    and once more in the backward instead of being kept (``_conv_regenerating_kernel``).
    """

    def __init__(self, conv: nn.Conv2d, hidden: int = 0, eps_min: float = scale_encoding(96)):
        super().__init__(conv)
        self.hidden = hidden
        # b starts as the wrapped conv's own kernel, not a fresh draw: at a given seed, SAN then starts
        # from the very network that the shared-conv models (parallel, RS-Net) start from, so that a
        # per-seed comparison of the methods is a paired one.
        self.base = nn.Parameter(conv.weight.detach().clone())
        if hidden == 0:
            self.scale = nn.Parameter(torch.zeros(self.weight_shape))
        else:
            self.hidden_layer = _place_kinks_(nn.Linear(1, hidden), eps_min)
            self.out = nn.Parameter(torch.zeros(conv.weight.numel(), hidden))
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None

    def generate(self, eps: float) -> torch.Tensor:
        if self.hidden == 0:
            # Not torch.add(base, scale, alpha=eps): its fused multiply-add rounds differently, and the
            # same job would no longer reproduce the numbers of runs trained before.
            return self.base + eps * self.scale
        # The MLP runs in float32 under autocast too: its output is a weight (autocast casts it for the
        # conv), and the backward generates it again outside autocast, which must give the same kernel.
        with torch.autocast(self.base.device.type, enabled=False):
            e = torch.tensor([[eps]], dtype=self.base.dtype, device=self.base.device)
            h = F.relu(self.hidden_layer(e))  # (1, hidden)
            return self.base + (self.out @ h.t()).view(self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.route().eps
        kernel = self.generate(eps)
        if not (torch.is_grad_enabled() and kernel.requires_grad) or torch.compiler.is_compiling():
            # Inference keeps nothing for backward; under torch.compile the partitioner already
            # recomputes cheap ops like this one instead of saving them.
            return self.conv(x, kernel, self.bias)
        return self._conv_regenerating_kernel(x, kernel, eps)

    def _conv_regenerating_kernel(self, x: torch.Tensor, kernel: torch.Tensor, eps: float) -> torch.Tensor:
        """The conv, with the generated kernel freed after the forward and generated again in backward.

        Autograd saves a conv's weight for the backward. Here that is a kernel generated for this
        resolution, so a training step would keep one whole set of kernels per training resolution
        alive from the forward to the backward: 5 x 45 MB for a five-resolution ResNet-18, which made
        the SAN step need about 1.4x the RS-Net step's memory. Generating a kernel again costs one
        elementwise add, small next to the conv's own backward. The kernel depends only on the meta
        net's parameters and eps; an in-place change of those parameters between forward and
        backward is an error, as autograd's own version check would make it.
        """
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            # Cast here, as autocast would inside the conv, so that the tensor the conv saves is this one.
            kernel = kernel.to(torch.get_autocast_dtype(device_type))
        kernel_id, versions = id(kernel), self._parameter_versions()

        # The hooks hold the kernel's id, never the kernel: a reference would keep it alive.
        def pack(t: torch.Tensor):
            return _KernelRecipe(eps, t.dtype, versions) if id(t) == kernel_id else t

        def unpack(saved):
            if not isinstance(saved, _KernelRecipe):
                return saved
            if self._parameter_versions() != saved.versions:
                raise RuntimeError("a SAN meta conv's parameters were modified in place between the forward "
                                   "and the backward; call backward before the optimiser step")
            with torch.no_grad():
                return self.generate(saved.eps).to(saved.dtype)

        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            return self.conv(x, kernel, self.bias)

    def _parameter_versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters())

    def materialize(self, eps: float) -> nn.Conv2d:
        with torch.no_grad():
            return self.as_plain_conv(self.generate(eps), self.bias)


class PrivateConv2d(Switchable, _ConvGeometry):
    """One kernel per training resolution (SAN Table 4 "privatized convolution").

    The kernels are stacked along the output-channel dim into one 4-D parameter of shape
    (slots * out, in / groups, kh, kw), not a 5-D (slots, out, ...) one: ``model.to(memory_format=
    torch.channels_last)`` converts every 4-D parameter and fails on 5-D ones, and a slot's kernel is
    then a contiguous dim-0 slice in either memory format.
    """

    def __init__(self, conv: nn.Conv2d, num_slots: int):
        super().__init__(conv)
        self.num_slots = num_slots
        self.weight = nn.Parameter(conv.weight.detach().repeat(num_slots, 1, 1, 1))
        for slot in range(num_slots):  # independent init per slot, each with the conv's own fan_out
            _conv_init_(self.weight.data[self._rows(slot)])
        self.bias = nn.Parameter(conv.bias.detach().repeat(num_slots)) if conv.bias is not None else None

    def _rows(self, slot: int) -> slice:
        return slice(slot * self.out_channels, (slot + 1) * self.out_channels)

    def kernel(self, slot: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = self._rows(slot)
        return self.weight[rows], None if self.bias is None else self.bias[rows]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, *self.kernel(self.route().conv))

    def materialize(self, slot: int) -> nn.Conv2d:
        weight, bias = self.kernel(slot)
        return self.as_plain_conv(weight.detach(), None if bias is None else bias.detach())


def init_std(conv: nn.Conv2d) -> float:
    """Standard deviation of torchvision's kaiming fan_out init for this conv (used in tests).

    torch computes fan_out from the weight's shape, out_channels * kernel area, whatever the groups
    (a depthwise 3x3 conv over C channels has fan_out 9C, not 9).
    """
    fan_out = conv.out_channels * math.prod(conv.kernel_size)
    return math.sqrt(2.0 / fan_out)
