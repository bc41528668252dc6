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
