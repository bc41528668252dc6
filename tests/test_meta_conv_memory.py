"""SAN's meta conv frees its generated kernel after the forward and generates it again in backward.

Autograd would otherwise keep one kernel per training resolution alive until the backward. These
tests check that the kernel the conv received is gone after the forward, that the gradients are
those of a conv whose kernel was kept, in fp32 and under bf16 autocast, and that changing the meta
net's parameters in place before the backward is refused instead of silently giving other gradients.
"""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import MetaConv2d, Route


def meta_conv(hidden: int) -> MetaConv2d:
    torch.manual_seed(0)
    layer = MetaConv2d(nn.Conv2d(4, 6, 3, padding=1, bias=False), hidden=hidden)
    with torch.no_grad():  # a trained-looking meta net: its eps-dependent part is not zero
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    layer.set_route(Route(bn=(0, 0, 0.0), eps=0.45, conv=0))
    return layer


def record_conv_weights(layer: MetaConv2d) -> list[weakref.ref]:
    """Weak references to every kernel the layer hands to its conv (a pass-through spy)."""
    seen, conv = [], layer.conv

    def recording(x, weight, bias):
        seen.append(weakref.ref(weight))
        return conv(x, weight, bias)

    layer.conv = recording
    return seen


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_kernel_the_conv_got_is_freed_after_the_forward(precision):
    layer = meta_conv(hidden=0)
    seen = record_conv_weights(layer)
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        y = layer(x)
    gc.collect()
    assert len(seen) == 1
    assert seen[0]() is None, "the generated kernel is still alive: autograd kept it for the backward"
    y.float().sum().backward()  # the backward generates it again
    assert layer.base.grad is not None and layer.scale.grad is not None

    # The check can fail: a conv on a kernel that autograd saves keeps that kernel alive.
    kernel = layer.generate(0.45)
    kept = weakref.ref(kernel)
    y_plain = F.conv2d(x, kernel, None, 1, 1)
    del kernel
    gc.collect()
    assert kept() is not None
    del y_plain


@pytest.mark.parametrize("hidden", [0, 8])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradients_equal_a_conv_whose_kernel_was_kept(hidden, precision):
    layer = meta_conv(hidden)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    g = torch.randn(2, 6, 8, 8)
    bf16 = precision == "bf16"
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = layer(x)
    (y.float() * g).sum().backward()
    got = {"x": x.grad, **{name: p.grad for name, p in layer.named_parameters()}}

    reference = meta_conv(hidden)  # the same parameters, the kernel kept by autograd as usual
    x_ref = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y_ref = F.conv2d(x_ref, reference.generate(0.45), None, 1, 1)
    (y_ref.float() * g).sum().backward()
    expected = {"x": x_ref.grad, **{name: p.grad for name, p in reference.named_parameters()}}

    torch.testing.assert_close(y.float(), y_ref.float(), rtol=0, atol=0)
    assert got.keys() == expected.keys()
    for name in expected:
        assert expected[name] is not None and expected[name].abs().sum() > 0, name
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)


def test_an_in_place_change_before_the_backward_is_an_error():
    layer = meta_conv(hidden=0)
    y = layer(torch.randn(2, 4, 8, 8))
    with torch.no_grad():
        layer.scale.mul_(2.0)  # e.g. an optimiser step taken before this forward's backward
    with pytest.raises(RuntimeError, match="modified in place between the forward and the backward"):
        y.sum().backward()


def test_inference_keeps_no_graph_and_generates_once():
    layer = meta_conv(hidden=0)
    calls = []
    generate = layer.generate
    layer.generate = lambda eps: calls.append(eps) or generate(eps)
    with torch.no_grad():
        y = layer(torch.randn(2, 4, 8, 8))
    assert y.grad_fn is None and calls == [0.45]
