"""SAN's MLP meta network (Table 5) starts with every hidden unit alive at every training resolution,
and generates kernels at the usual conv scale."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import MetaConv2d, ModelConfig, scale_encoding
from backbones.switchable import init_std
from jobspec import MethodConfig
from methods import build_method

PAPERS = [224, 192, 160, 128, 96]
TINY = [48, 40, 32, 24]


def san_net(backbone: str, hidden: int, resolutions: list[int]):
    model = ModelConfig(backbone=backbone, small_input=backbone == "resnet_tiny", width=8)
    return build_method(MethodConfig(name="san", meta_hidden=hidden), model, resolutions).build(10)


def mlp_convs(net) -> list[MetaConv2d]:
    metas = [m for m in net.modules() if isinstance(m, MetaConv2d)]
    assert metas and all(m.hidden > 0 for m in metas)
    return metas


def pre_activation(meta: MetaConv2d, eps: float) -> torch.Tensor:
    return meta.hidden_layer(torch.tensor([[eps]])).squeeze(0)


CASES = [("resnet_tiny", 8, PAPERS), ("resnet_tiny", 16, PAPERS), ("resnet_tiny", 8, TINY),
         ("resnet_tiny", 16, TINY), ("mobilenet_v2", 8, PAPERS)]


@pytest.mark.parametrize("backbone, hidden, resolutions", CASES)
def test_every_hidden_unit_is_active_at_every_training_eps(backbone, hidden, resolutions):
    torch.manual_seed(0)
    for meta in mlp_convs(san_net(backbone, hidden, resolutions)):
        assert meta.hidden_layer.out_features == hidden
        for r in resolutions:
            z = pre_activation(meta, scale_encoding(r))
            assert (z > 0).all(), (meta, r, z)


@pytest.mark.parametrize("backbone, hidden, resolutions", CASES)
def test_generated_kernels_start_at_the_usual_conv_scale(backbone, hidden, resolutions):
    torch.manual_seed(0)
    for meta in mlp_convs(san_net(backbone, hidden, resolutions)):
        if meta.base.numel() < 200:  # too few weights for a meaningful std
            continue
        for r in resolutions:
            std = meta.generate(scale_encoding(r)).std().item()
            assert init_std(meta) / 2 < std < 2 * init_std(meta), (meta, r)


def test_default_init_would_leave_units_dead():
    """Why the init is not PyTorch's: a default 1 -> H layer has units off at every training eps."""
    torch.manual_seed(0)
    layer = nn.Linear(1, 1000)
    eps = torch.tensor([[scale_encoding(r)] for r in PAPERS])
    dead = (layer(eps) <= 0).all(0).float().mean().item()
    assert 0.35 < dead < 0.55


def test_every_hidden_unit_learns():
    """Once the output layer has moved off zero, every hidden unit's V and c receive gradient."""
    torch.manual_seed(0)
    net = san_net("resnet_tiny", 8, [32, 24, 16]).train()
    metas = mlp_convs(net)
    for m in metas:
        with torch.no_grad():
            m.out.normal_(std=1e-3)
    xs = [torch.randn(2, 3, r, r) for r in (32, 24, 16)]
    sum(F.cross_entropy(z, torch.tensor([1, 2])) for z in net(xs)).backward()
    for m in metas:
        assert (m.hidden_layer.bias.grad != 0).all(), m
        assert (m.hidden_layer.weight.grad != 0).all(), m


def _bench_meta_kinks():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "meta_kinks.py"
    spec = importlib.util.spec_from_file_location("meta_kinks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_mlp_starts_affine_in_eps_and_bends_only_where_a_kink_enters_the_training_range():
    """bench/meta_kinks.py's census: at init every unit is active over [eps(24), eps(48)] = [0.075, 0.15],
    so the MLP is affine there whatever its output layer; a kink moved inside bends it by a hand-computed
    amount, and a unit with negative slope whose kink is below the range is dead over all of it."""
    census = _bench_meta_kinks().kink_census
    torch.manual_seed(0)
    net = san_net("resnet_tiny", 8, TINY)
    metas = mlp_convs(net)
    lo, hi = scale_encoding(24), scale_encoding(48)
    with torch.no_grad():
        for m in metas:
            m.out.normal_(std=0.1)  # an output layer off zero, so any bend would show
    start = census(net, lo, hi)
    assert (start["kink_inside"], start["active_throughout"], start["dead_throughout"]) == (0, 8 * len(metas), 0)
    assert start["max_relative_bend"] < 1e-12
    first = metas[0]
    with torch.no_grad():
        first.hidden_layer.bias[3] = -0.1  # slope 1: kink at 0.1, inside the range
        first.hidden_layer.weight[5, 0], first.hidden_layer.bias[5] = -1.0, 0.05  # relu(0.05 - eps) = 0 there
        keep = first.out[:, 3].clone()
        first.out.zero_()
        first.out[:, 3] = keep  # this conv's eps-part is now U3 relu(eps - 0.1) alone
    moved = census(net, lo, hi)
    assert (moved["kink_inside"], moved["active_throughout"], moved["dead_throughout"]) == (1, 8 * len(metas) - 2, 1)
    # Over the 33-point grid the chord of relu(eps - 0.1) from 0.075 (0) to 0.15 (0.05) is farthest from it
    # at grid point 11, eps = 0.075 + 11 * 0.075 / 32: 0.05 * 11/32 - 0.00078125 = 0.01640625; / span 0.05.
    assert moved["max_relative_bend"] == pytest.approx(0.328125, rel=1e-6)  # float32 c = -0.1
