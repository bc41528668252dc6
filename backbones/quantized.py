"""LQ-Nets' learned quantizers (Zhang et al., ECCV 2018), as the quantized RS-Nets use them (RS-Nets §4.1/§4.2).

A K-bit quantizer has a basis v (K numbers) and 2^K levels vᵀb: b ∈ {−1, 1}^K for weights (one basis
per output channel), b ∈ {0, 1}^K for activations (one basis per quantizer, or per resolution). A value
is quantized to its nearest level; the basis is fitted to the values by least squares on their codes.

- ``QuantizedConv2d``: the forward pass convolves with the quantized weight, the backward pass is a
  straight-through estimator to the full-precision weight (dL/dw = dL/dq). The basis is fitted by
  quantization error minimisation (QEM): optimal codes for the basis, then the least-squares basis for
  the codes. As LQ-Nets' and the RS-Nets reference code (yikaiw/RS-Nets ``quantization/``) do, one QEM
  iteration runs per training step and its basis enters by a moving average (0.9 old + 0.1 new,
  zero-debiased as TensorFlow's ``assign_moving_average`` that both use: see ``debiased_blend_``).
  ``refit`` does that once per step, before the forward at every resolution (``MultiResolutionNet.
  forward_multi``), so all resolutions of a step see identical quantized weights. Deviation: the
  reference adds one moving-average op per resolution (its graph is built once per resolution), so an
  RS-Net's basis moved 0.9^5 per step and an I-Net's 0.9; here every model moves 0.9 per step.
- ``ActivationQuantizer``: the basis is not learnt by gradients; each training forward moves it by the
  moving average of the batch's least-squares solution. Gradients pass straight through, clipped at
  the top level (zero above it). ``basis_mode``: one basis shared by all resolutions (the reference's
  default), one per resolution ("private"), or the reference's ``fixed_qa`` ("fixed": one basis,
  updated only at the largest training resolution). No update in eval mode or without autograd.

Both least-squares fits add a ridge δ = 1e-4 towards the current basis, (BᵀB + δI) v = Bᵀx + δ v_old,
as the reference's weight quantizer does: it keeps a basis component whose code never occurs in the
batch where it was, instead of a singular solve. The reference's activation fit has no ridge (and
divides by zero on such a batch); with BᵀB counting thousands of values, δ moves nothing else.

Each basis counts its updates (buffer ``basis_updates``, saved with the weights) for the debiasing. A
state dict from before the counter loads with it at ``SETTLED_UPDATES``: its basis was averaged without
debiasing for however long it trained, and goes on at the plain 0.9 / 0.1 rate.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn

from .catalog import ACT_BASIS_CHOICES as BASIS_MODES
from .switchable import Switchable

NORM_PPF_0_75 = 0.6745  # 75th percentile of N(0, 1): LQ-Nets' initial basis scale
MOVING_AVERAGE = 0.9  # basis <- 0.9 basis + 0.1 least-squares basis, zero-debiased (reference MOVING_AVERAGES_FACTOR)
RIDGE = 1e-4  # reference EPS
SETTLED_UPDATES = 1000  # 0.9^1000 underflows: the debiased average is then the plain one


def bit_codes(bits: int, signed: bool) -> torch.Tensor:
    """(2^K, K): row i holds the bits of i (bit j = (i >> j) & 1), as ±1 when ``signed``."""
    i = torch.arange(2 ** bits)[:, None]
    b = ((i >> torch.arange(bits)[None, :]) & 1).float()
    return 2 * b - 1 if signed else b


def in_fp32(fn):
    """Run ``fn`` with autocast off: under bf16/fp16 autocast the basis fits' matmuls would run in
    low precision and move the levels by about 1 %; the quantizers' maths stays float32."""
    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        with torch.autocast(x.device.type, enabled=False):
            return fn(x, *args, **kwargs)
    return wrapper


@in_fp32
def nearest_levels(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows x (C, N) and bases (C, K): each value's nearest level (C, N) and the index of its code
    in ``codes`` (C, N). A value on a midpoint goes to the lower level, as the reference's ``x > thr``."""
    levels = basis @ codes.t()  # (C, 2^K)
    ordered, order = levels.sort(dim=1)
    midpoints = (ordered[:, 1:] + ordered[:, :-1]) / 2
    position = level_position(x, midpoints)
    return ordered.gather(1, position), order.gather(1, position)


def level_position(x: torch.Tensor, midpoints: torch.Tensor) -> torch.Tensor:
    """How many of the row's sorted midpoints (C, L-1) each value of x (C, N) lies above: the index of
    its nearest level. Equal to ``torch.searchsorted(midpoints, x)``. With few levels (K <= 3) one
    vectorised comparison per midpoint, counted in uint8, measured about 6x faster on CPU than the
    binary search per value, which dominated a W2/A2 step."""
    if midpoints.shape[1] > 7:
        return torch.searchsorted(midpoints.contiguous(), x.contiguous())
    position = (x > midpoints[:, :1]).to(torch.uint8)
    for j in range(1, midpoints.shape[1]):
        position += x > midpoints[:, j:j + 1]
    return position.long()


@in_fp32
def least_squares_basis(x: torch.Tensor, code_index: torch.Tensor, codes: torch.Tensor, prior: torch.Tensor,
                        ridge: float = RIDGE) -> torch.Tensor:
    """Per row c: argmin_v ||x_c − B_c v||² + ridge ||v − prior_c||², B_c the rows' codes.

    BᵀB and Bᵀx are summed per code (count and sum of the values holding it), not from an (N, K) B:
    an activation batch has tens of millions of values.
    """
    rows, levels = x.shape[0], codes.shape[0]
    counts = torch.zeros(rows, levels, dtype=x.dtype, device=x.device).scatter_add_(1, code_index, torch.ones_like(x))
    sums = torch.zeros(rows, levels, dtype=x.dtype, device=x.device).scatter_add_(1, code_index, x)
    codes = codes.to(x.dtype)
    btb = torch.einsum("cl,lk,lj->ckj", counts, codes, codes)
    btx = sums @ codes
    eye = torch.eye(codes.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.solve(btb + ridge * eye, (btx + ridge * prior).unsqueeze(-1)).squeeze(-1)


def quantization_error(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Sum of squared distances of x (C, N) to their nearest levels."""
    return (x - nearest_levels(x, basis, codes)[0]).pow(2).sum()


def qem(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor, iterations: int = 1,
        ridge: float = RIDGE) -> torch.Tensor:
    """LQ-Nets' quantization error minimisation: alternately the optimal codes for the basis (nearest
    levels) and the least-squares basis for the codes. Neither half can raise the error (the ridge
    term only adds a non-negative cost to the basis step), so it never increases over iterations."""
    for _ in range(iterations):
        _, index = nearest_levels(x, basis, codes)
        basis = least_squares_basis(x, index, codes, basis, ridge)
    return basis


def weight_basis_init(conv: nn.Conv2d, bits: int) -> torch.Tensor:
    """LQ-Nets' initial weight basis (C, K): v_j = 2^j · 0.6745 · sqrt(2 / n) / 2^(K−1), n = fan_out
    (k·k·out), so the levels span the quartiles of the kaiming-normal (fan_out) init."""
    n = math.prod(conv.kernel_size) * conv.out_channels
    base = NORM_PPF_0_75 * math.sqrt(2.0 / n) / 2 ** (bits - 1)
    return (base * 2.0 ** torch.arange(bits, dtype=torch.float32)).repeat(conv.out_channels, 1)


def activation_basis_init(bits: int) -> torch.Tensor:
    """LQ-Nets' initial activation basis (K,): v_j = 2^j · 2 · 0.6745 / (2^K − 1), uniform levels from 0."""
    return (NORM_PPF_0_75 * 2 / (2 ** bits - 1)) * 2.0 ** torch.arange(bits, dtype=torch.float32)


def debiased_blend_(basis: torch.Tensor, fitted: torch.Tensor, updates: torch.Tensor) -> None:
    """One update of TensorFlow's ``assign_moving_average(basis, fitted, 0.9)``, whose default
    ``zero_debias=True`` LQ-Nets' and the RS-Nets reference's quantizers keep: TF averages the fits in
    an accumulator starting at 0 (a ← 0.9 a + 0.1 fit) and sets the basis to a / (1 − 0.9^t) after
    the t-th update, so the initial basis is only the quantizer's first levels and the first update
    replaces it with the fit. The same average without the accumulator, since a_{t−1} = basis·(1 − 0.9^{t−1}):
    basis ← k basis + (1 − k) fit, k = 0.9 (1 − 0.9^{t−1}) / (1 − 0.9^t) (0 at t = 1, → 0.9).
    ``updates`` (t − 1 before, t after) is a tensor so that no value leaves the device."""
    updates.add_(1)
    t = updates.to(basis.dtype)
    keep = MOVING_AVERAGE * (1 - MOVING_AVERAGE ** (t - 1)) / (1 - MOVING_AVERAGE ** t)
    basis.mul_(keep).add_((1 - keep) * fitted)


def _fill_missing_counter(module: nn.Module, state_dict: dict, prefix: str) -> None:
    """A state dict saved before ``basis_updates`` existed: count its basis as settled (module docstring)."""
    key = prefix + "basis_updates"
    if key not in state_dict and prefix + "basis" in state_dict:
        state_dict[key] = torch.full_like(module.basis_updates, SETTLED_UPDATES)


class QuantizedConv2d(nn.Conv2d):
    """A conv whose forward uses K-bit weights with a learned basis per output channel.

    It keeps the replaced conv's own weight (and bias) parameters, initialised by torchvision; the
    basis is a buffer (fitted, not trained).
    """

    def __init__(self, conv: nn.Conv2d, bits: int):
        # Built on the meta device, then handed the old conv's parameters: no second random init.
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                         device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        self.bits = bits
        device = conv.weight.device
        self.register_buffer("codes", bit_codes(bits, signed=True).to(device), persistent=False)
        self.register_buffer("basis", weight_basis_init(conv, bits).to(device))
        self.register_buffer("basis_updates", torch.zeros((), dtype=torch.long, device=device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _fill_missing_counter(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _rows(self) -> torch.Tensor:
        return self.weight.detach().reshape(self.out_channels, -1).float()

    @torch.no_grad()
    def refit(self) -> None:
        """One QEM iteration on the current weights, blended into the basis (once per training step)."""
        debiased_blend_(self.basis, qem(self._rows(), self.basis, self.codes, iterations=1), self.basis_updates)

    @torch.no_grad()
    def quantized_weight(self) -> torch.Tensor:
        q, _ = nearest_levels(self._rows(), self.basis, self.codes)
        return q.reshape(self.weight.shape).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.straight_through_weight(), self.bias)

    def straight_through_weight(self) -> torch.Tensor:
        """The quantized weight, with the straight-through gradient to the full-precision one (dL/dw = dL/dq).

        Kept while the weight and the basis stay as they are (their version counters and storage), so
        that a training step's S resolutions, which follow the step's one refit, share one quantization,
        and their convs save one weight tensor for the backward instead of S; evaluation batches share
        it too. The optimiser step, a refit or a load changes a version and the next call quantizes anew.
        """
        w = self.weight
        if torch.compiler.is_compiling():  # no Python-side state inside a compiled graph
            return w + (self.quantized_weight() - w).detach()
        key = (w._version, w.data_ptr(), w.dtype, self.basis._version, self.basis.data_ptr(),
               torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        if self._weight_cache is None or self._weight_cache[0] != key:
            q = self.quantized_weight()
            self._weight_cache = (key, w + (q - w).detach() if torch.is_grad_enabled() else q)
        return self._weight_cache[1]

    _weight_cache: tuple | None = None

    def __getstate__(self):
        # The cached weight may belong to an autograd graph, which deepcopy (materialize) and pickle refuse.
        state = self.__dict__.copy()
        state.pop("_weight_cache", None)
        return state

    def materialize(self) -> nn.Conv2d:
        """A plain conv holding the quantized weight (what an exported model stores)."""
        plain = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                          self.dilation, self.groups, bias=self.bias is not None, padding_mode=self.padding_mode,
                          device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(self.quantized_weight())
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain

    def extra_repr(self):
        return super().extra_repr() + f", weight_bits={self.bits}"


class ActivationSite(nn.Identity):
    """Where a backbone quantizes a conv's input when activations are quantized (pre-activation ResNets):
    an identity at full precision, swapped for an ``ActivationQuantizer`` by surgery."""


@in_fp32
def _quantize_activation(x: torch.Tensor, basis: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output with the clipped straight-through gradient, code index of every value)."""
    flat = x.detach().reshape(1, -1).float()
    q, index = nearest_levels(flat, basis.view(1, -1), codes)
    top = (basis.view(1, -1) @ codes.t()).max()
    clipped = torch.clamp(x, max=top.to(x.dtype))  # gradient: 1 below the top level, 0 above it
    return clipped + (q.view_as(x).to(x.dtype) - clipped).detach(), index


class ActivationQuantizer(Switchable, nn.Module):
    """K-bit activations with levels vᵀb, b ∈ {0, 1}^K; the basis follows the batches (module docstring).

    ``basis`` has one row per slot in "private" mode (the route's nearest slot, as privatized convs),
    one row otherwise.
    """

    def __init__(self, bits: int, num_slots: int, basis_mode: str = "shared"):
        super().__init__()
        if basis_mode not in BASIS_MODES:
            raise ValueError(f"unknown activation basis mode {basis_mode!r}; choose one of {', '.join(BASIS_MODES)}")
        self.bits, self.basis_mode = bits, basis_mode
        rows = num_slots if basis_mode == "private" else 1
        self.register_buffer("codes", bit_codes(bits, signed=False), persistent=False)
        self.register_buffer("basis", activation_basis_init(bits).repeat(rows, 1))
        self.register_buffer("basis_updates", torch.zeros(rows, dtype=torch.long))  # one count per row

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _fill_missing_counter(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def row(self, slot: int) -> int:
        return slot if self.basis_mode == "private" else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slot = self.route().conv
        row = self.row(slot)
        basis = self.basis[row]
        y, index = _quantize_activation(x, basis, self.codes)
        if self.training and torch.is_grad_enabled() and (self.basis_mode != "fixed" or slot == 0):
            with torch.no_grad():
                flat = x.detach().reshape(1, -1).float()
                fitted = least_squares_basis(flat, index, self.codes, basis.view(1, -1))[0]
                debiased_blend_(basis, fitted, self.basis_updates[row])
        return y

    def materialize(self, slot: int) -> "FrozenActivationQuantizer":
        return FrozenActivationQuantizer(self.basis[self.row(slot)].detach().clone(), self.bits)

    def extra_repr(self):
        return f"act_bits={self.bits}, basis={self.basis_mode}, rows={self.basis.shape[0]}"


class FrozenActivationQuantizer(nn.Module):
    """One slot's activation levels baked for a plain net (``materialize``): quantizes, never updates."""

    def __init__(self, basis: torch.Tensor, bits: int):
        super().__init__()
        self.bits = bits
        self.register_buffer("codes", bit_codes(bits, signed=False).to(basis.device), persistent=False)
        self.register_buffer("basis", basis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _quantize_activation(x, self.basis, self.codes)[0]

    def extra_repr(self):
        return f"act_bits={self.bits}, frozen"
