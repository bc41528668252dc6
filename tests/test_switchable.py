"""Switchable layers, routing, module surgery: checked against hand computations on small tensors."""
from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck, resnet18, resnet50

from backbones import (MetaConv2d, PrivateConv2d, Route, SwitchableBatchNorm2d, build_net, materialize,
                       recalibrate_bn, scale_encoding)
from backbones.switchable import Switchable, init_std

RES = [32, 24, 16]


def slot_route(slot: int, eps: float = 0.5) -> Route:
    return Route(bn=(slot, slot, 0.0), eps=eps, conv=slot)


def randomize_bn(bn: SwitchableBatchNorm2d, seed: int = 0) -> None:
    """Distinct gamma/beta/mean/var in every slot, so that using the wrong slot shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


def randomize_net(net, seed: int = 0) -> None:
    """Random BN slots and nonzero meta-net scale parts: makes every route produce different numbers."""
    g = torch.Generator().manual_seed(seed)
    for i, m in enumerate(net.modules()):
        if isinstance(m, SwitchableBatchNorm2d):
            randomize_bn(m, seed + i)
        elif isinstance(m, MetaConv2d) and m.hidden == 0:
            with torch.no_grad():
                m.scale.copy_(torch.randn(m.scale.shape, generator=g) * m.base.std())


def hand_bn(x, gamma, beta, mean, var, eps=1e-5):
    shape = (1, -1, 1, 1)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * gamma.view(shape) + beta.view(shape)


# ---------------------------------------------------------------- switchable BN


def test_switchable_bn_eval_uses_the_selected_slot():
    bn = SwitchableBatchNorm2d(4, num_slots=3).eval()
    randomize_bn(bn)
    x = torch.randn(2, 4, 3, 3)
    for slot in range(3):
        bn.set_route(slot_route(slot))
        expected = hand_bn(x, bn.weight[slot], bn.bias[slot], bn.running_mean[slot], bn.running_var[slot])
        torch.testing.assert_close(bn(x), expected)
    # and the slots really differ, so the loop above could have caught a wrong slot
    assert not torch.allclose(hand_bn(x, bn.weight[0], bn.bias[0], bn.running_mean[0], bn.running_var[0]),
                              hand_bn(x, bn.weight[1], bn.bias[1], bn.running_mean[1], bn.running_var[1]))


def test_switchable_bn_train_updates_only_the_selected_slot_in_place():
    bn = SwitchableBatchNorm2d(3, num_slots=3, momentum=0.1).train()
    randomize_bn(bn)
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    buffer_ptr = bn.running_mean.data_ptr()
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    bn.set_route(slot_route(1))
    y = bn(x)

    batch_mean = x.mean(dim=(0, 2, 3))
    batch_var_biased = x.var(dim=(0, 2, 3), unbiased=False)
    batch_var_unbiased = x.var(dim=(0, 2, 3), unbiased=True)
    # normalised with the batch statistics and slot 1's affine parameters
    torch.testing.assert_close(y, hand_bn(x, bn.weight[1], bn.bias[1], batch_mean, batch_var_biased))
    # the row views were updated in place: the change is visible in the (slots, C) buffers
    assert bn.running_mean.data_ptr() == buffer_ptr
    torch.testing.assert_close(bn.running_mean[1], 0.9 * before_mean[1] + 0.1 * batch_mean)
    torch.testing.assert_close(bn.running_var[1], 0.9 * before_var[1] + 0.1 * batch_var_unbiased)
    for other in (0, 2):
        assert torch.equal(bn.running_mean[other], before_mean[other])
        assert torch.equal(bn.running_var[other], before_var[other])
    assert bn.num_batches_tracked.tolist() == [0, 1, 0]


def test_switchable_bn_cumulative_average_per_slot():
    """momentum=None: each slot's statistics are the plain average over the batches it saw."""
    bn = SwitchableBatchNorm2d(2, num_slots=2, momentum=None).train()
    batches = [torch.randn(3, 2, 4, 4) + k for k in range(3)]
    bn.set_route(slot_route(0))
    for x in batches:
        bn(x)
    bn.set_route(slot_route(1))
    bn(batches[0])
    torch.testing.assert_close(bn.running_mean[0], torch.stack([x.mean(dim=(0, 2, 3)) for x in batches]).mean(0))
    torch.testing.assert_close(bn.running_mean[1], batches[0].mean(dim=(0, 2, 3)))
    assert bn.num_batches_tracked.tolist() == [3, 1]


def test_switchable_bn_gradient_reaches_only_the_selected_slot():
    bn = SwitchableBatchNorm2d(3, num_slots=3).train()
    bn.set_route(slot_route(2))
    bn(torch.randn(4, 3, 2, 2)).pow(2).sum().backward()
    assert bn.weight.grad[2].abs().sum() > 0
    assert bn.weight.grad[:2].abs().sum() == 0 and bn.bias.grad[:2].abs().sum() == 0


def test_interpolated_bn_is_the_average_of_the_two_neighbours():
    bn = SwitchableBatchNorm2d(4, num_slots=3).eval()
    randomize_bn(bn)
    x = torch.randn(2, 4, 3, 3)
    bn.set_route(Route(bn=(0, 1, 0.5), eps=0.0, conv=0))
    avg = lambda t: (t[0] + t[1]) / 2  # noqa: E731
    expected = hand_bn(x, avg(bn.weight), avg(bn.bias), avg(bn.running_mean), avg(bn.running_var))
    torch.testing.assert_close(bn(x), expected)
    bn.train()
    with pytest.raises(RuntimeError, match="inference-time"):
        bn(x)


def test_interpolation_routes_midpoint_training_resolution_and_clamping():
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4)
    assert net.route(28, bn="interpolate").bn == (0, 1, 0.5)  # midpoint of 32 and 24
    assert net.route(20, bn="interpolate").bn == (1, 2, 0.5)
    assert net.route(30, bn="interpolate").bn == (0, 1, 0.25)  # 2/8 of the way from 32 to 24
    assert net.route(24, bn="interpolate").bn == (1, 1, 0.0)  # a training resolution: that slot exactly
    assert net.route(48, bn="interpolate").bn == (0, 0, 0.0)  # above the range: clamps to the largest
    assert net.route(8, bn="interpolate").bn == (2, 2, 0.0)  # below: the smallest
    assert net.route(28, bn="nearest").bn == (0, 0, 0.0)  # tie between 32 and 24 goes to the larger
    assert net.route(27, bn="nearest").bn == (1, 1, 0.0)


def test_interpolated_bn_in_a_network_matches_hand_averaged_slots():
    """Interpolating at 28 equals a network whose slot-0 BN holds the average of slots 0 and 1."""
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4).eval()
    randomize_net(net)
    x = torch.randn(2, 3, 28, 28)
    interpolated = net(x, resolution=28, bn="interpolate")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, SwitchableBatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean, m.running_var):
                    t[0] = (t[0] + t[1]) / 2
    torch.testing.assert_close(interpolated, net(x, resolution=28, slot=0))
    assert not torch.allclose(interpolated, net(x, resolution=28, slot=1), atol=1e-4)


def test_zero_init_residual_zeroes_every_slot():
    norm = partial(SwitchableBatchNorm2d, num_slots=3)
    for build, block, last in ((resnet18, BasicBlock, "bn2"), (resnet50, Bottleneck, "bn3")):
        model = build(num_classes=10, norm_layer=norm, zero_init_residual=True)
        blocks = [m for m in model.modules() if isinstance(m, block)]
        assert blocks
        for b in blocks:
            bn = getattr(b, last)
            assert bn.weight.shape == (3, bn.num_features)
            assert torch.count_nonzero(bn.weight) == 0
            assert torch.all(b.bn1.weight == 1)  # torchvision's BN init reached the other BNs too


# ---------------------------------------------------------------- routes


def test_layers_without_a_route_raise():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    layers = [SwitchableBatchNorm2d(3, num_slots=2), MetaConv2d(conv), MetaConv2d(conv, hidden=4),
              PrivateConv2d(conv, num_slots=2)]
    x = torch.randn(1, 3, 4, 4)
    for layer in layers:
        with pytest.raises(RuntimeError, match="no resolution selected"):
            layer(x)
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4)
    with pytest.raises(RuntimeError, match="no resolution selected"):
        net.backbone(torch.randn(1, 3, 24, 24))


def test_resolution_argument_and_context_agree_and_route_is_cleared():
    torch.manual_seed(0)
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4, convs="meta").eval()
    randomize_net(net)
    x = torch.randn(2, 3, 24, 24)
    by_argument = net(x, resolution=24)
    with net.at_resolution(24) as same:
        assert same is net
        by_context = net.backbone(x)
    torch.testing.assert_close(by_argument, by_context)
    torch.testing.assert_close(net(x), by_argument)  # resolution defaults to the input's size
    assert not torch.allclose(by_argument, net(x, resolution=32), atol=1e-4)  # the route matters
    switchable = [m for m in net.modules() if isinstance(m, Switchable)]
    assert switchable and all(m._route is None for m in switchable)
    with pytest.raises(ValueError, match="boom"):
        with net.at_resolution(16):
            raise ValueError("boom")
    assert all(m._route is None for m in switchable)  # cleared even when the block raises


def test_forward_multi_uses_slot_s_for_input_s():
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4, convs="meta").eval()
    randomize_net(net)
    xs = [torch.randn(2, 3, r, r) for r in RES]
    outs = net(xs)
    for slot, (x, out) in enumerate(zip(xs, outs)):
        torch.testing.assert_close(out, net(x, resolution=RES[slot]))
    with pytest.raises(ValueError, match="3 training resolutions"):
        net(xs[:2])


def test_forward_multi_with_identical_resolutions_still_uses_slot_s():
    """RS-Nets Table 6 "single-resolution": [24, 24, 24] has three slots, chosen by position."""
    net = build_net("resnet_tiny", 10, [24, 24, 24], small_input=True, width=4).eval()
    randomize_net(net)
    x = torch.randn(2, 3, 24, 24)
    outs = net([x, x, x])
    for slot, out in enumerate(outs):
        torch.testing.assert_close(out, net(x, resolution=24, slot=slot))
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)


def test_route_rejects_unknown_modes():
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4)
    with pytest.raises(ValueError, match="interpolate"):
        net.route(24, bn="linear")
    with pytest.raises(ValueError, match="ideal"):
        net.route(24, eps="exact")


# ---------------------------------------------------------------- meta and private convs


def test_meta_conv_linear_is_b_plus_eps_w():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=True)
    meta = MetaConv2d(conv)
    with torch.no_grad():
        meta.scale.normal_()
    x = torch.randn(2, 4, 9, 9)
    for resolution in (224, 96, 150):
        eps = resolution / 320
        assert scale_encoding(resolution) == pytest.approx(eps)
        meta.set_route(Route(bn=(0, 0, 0.0), eps=eps, conv=0))
        expected = F.conv2d(x, meta.base + eps * meta.scale, meta.bias, stride=2, padding=1)
        torch.testing.assert_close(meta(x), expected)
    assert scale_encoding(224) == pytest.approx(0.7) and scale_encoding(96) == pytest.approx(0.3)


def test_meta_conv_mlp_matches_hand_computation():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    meta = MetaConv2d(conv, hidden=8)
    with torch.no_grad():
        meta.out.normal_()
    eps = 0.45
    V, c = meta.hidden_layer.weight.detach()[:, 0], meta.hidden_layer.bias.detach()  # (8,), (8,)
    h = [max(0.0, float(V[k]) * eps + float(c[k])) for k in range(8)]
    assert any(v > 0 for v in h)  # some hidden units are active, so the MLP part matters
    kernel = meta.base.detach().clone()
    for k in range(8):
        kernel += meta.out[:, k].detach().view(kernel.shape) * h[k]
    torch.testing.assert_close(meta.generate(eps), kernel)
    x = torch.randn(1, 2, 5, 5)
    meta.set_route(Route(bn=(0, 0, 0.0), eps=eps, conv=0))
    torch.testing.assert_close(meta(x), F.conv2d(x, kernel, padding=1))


@pytest.mark.parametrize("hidden", [0, 8])
def test_meta_conv_init_gives_usual_kaiming_scale(hidden):
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as every backbone does
    meta = MetaConv2d(conv, hidden=hidden)
    expected_std = (2.0 / (128 * 9)) ** 0.5  # kaiming normal, fan_out, relu
    assert init_std(conv) == pytest.approx(expected_std)
    assert torch.equal(meta.base, conv.weight)  # b is the wrapped conv's own kernel, not a new draw
    for eps in (0.7, 0.3):
        kernel = meta.generate(eps)
        assert kernel.std().item() == pytest.approx(expected_std, rel=0.05)
        assert kernel.abs().max() < 0.5  # nowhere near U(-1, 1)
    # the eps-dependent part starts at zero: every resolution sees the same kernel at step 0
    torch.testing.assert_close(meta.generate(0.7), meta.generate(0.3))


@pytest.mark.parametrize("backbone", ["resnet_tiny", "mobilenet_v2"])
def test_san_starts_from_the_shared_conv_network_of_the_same_seed(backbone):
    """At one seed, a SAN net (meta convs) and a parallel net (shared convs) are the same function at
    step 0, at every resolution: a per-seed comparison of the methods is a paired one. The meta nets'
    own draws (an MLP's hidden layer) come after every backbone draw, so they change nothing else."""
    nets = {}
    for convs in ("plain", "meta"):
        torch.manual_seed(3)
        nets[convs] = build_net(backbone, 10, RES, small_input=True, width=4, convs=convs, meta_hidden=4).eval()
    kernels = [m.weight for m in nets["plain"].modules() if type(m) is nn.Conv2d]
    metas = [m for m in nets["meta"].modules() if isinstance(m, MetaConv2d)]
    assert len(kernels) == len(metas)
    for kernel, meta in zip(kernels, metas):
        torch.testing.assert_close(meta.generate(scale_encoding(16)), kernel, rtol=0, atol=0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for r in RES:
            xr = F.interpolate(x, size=r, mode="bilinear", antialias=True)
            torch.testing.assert_close(nets["meta"](xr, resolution=r), nets["plain"](xr, resolution=r))


def test_meta_convs_everywhere_with_usual_init():
    """Every conv (stem, blocks, downsample, MobileNetV2's depthwise) becomes a meta conv at torchvision's scale."""
    torch.manual_seed(0)
    for backbone, num_convs in (("resnet_tiny", 9), ("mobilenet_v2", 52)):
        plain = build_net(backbone, 10, RES, small_input=True, width=4)
        net = build_net(backbone, 10, RES, small_input=True, width=4, convs="meta")
        metas = [m for m in net.modules() if isinstance(m, MetaConv2d)]
        assert len(metas) == num_convs == sum(type(m) is nn.Conv2d for m in plain.modules())
        assert not any(type(m) is nn.Conv2d for m in net.modules())
        for m in metas:
            if m.base.numel() >= 1000:
                std = (2.0 / (m.weight_shape[0] * m.weight_shape[2] * m.weight_shape[3])) ** 0.5
                assert m.generate(0.5).std().item() == pytest.approx(std, rel=0.15), m
    depthwise = [m for m in metas if m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)


@pytest.mark.parametrize("backbone", ["resnet_tiny", "mobilenet_v2"])
def test_gradient_reaches_every_meta_parameter(backbone):
    torch.manual_seed(0)
    net = build_net(backbone, 10, RES, small_input=True, width=4, convs="meta").train()
    xs = [torch.randn(2, 3, r, r) for r in RES]
    sum(F.cross_entropy(z, torch.tensor([1, 2])) for z in net(xs)).backward()
    metas = [m for m in net.modules() if isinstance(m, MetaConv2d)]
    for m in metas:
        assert m.base.grad is not None and m.base.grad.abs().sum() > 0, m
        assert m.scale.grad is not None and m.scale.grad.abs().sum() > 0, m
    if backbone == "mobilenet_v2":
        assert any(m.groups > 1 for m in metas)


def test_gradient_reaches_mlp_meta_network():
    torch.manual_seed(0)
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4, convs="meta", meta_hidden=8).train()
    for m in net.modules():
        if isinstance(m, MetaConv2d):
            with torch.no_grad():
                m.out.normal_(std=1e-3)  # at init out = 0, which blocks the gradient to the hidden layer
    xs = [torch.randn(2, 3, r, r) for r in RES]
    sum(z.logsumexp(1).sum() for z in net(xs)).backward()
    for m in net.modules():
        if isinstance(m, MetaConv2d):
            for p in (m.base, m.out, m.hidden_layer.weight, m.hidden_layer.bias):
                assert p.grad is not None and p.grad.abs().sum() > 0, m


def test_private_conv_uses_its_slot():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    private = PrivateConv2d(conv, num_slots=3)
    weights = private.weight.detach().view(3, 4, 3, 3, 3)  # (slots, out, in, kh, kw)
    biases = private.bias.detach().view(3, 4)
    assert not torch.equal(weights[0], weights[1])  # independent init per slot
    x = torch.randn(1, 3, 5, 5)
    for slot in range(3):
        private.set_route(slot_route(slot))
        torch.testing.assert_close(private(x), F.conv2d(x, weights[slot], biases[slot], padding=1))


def test_private_conv_init_is_kaiming_per_slot():
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3, bias=False)
    private = PrivateConv2d(conv, num_slots=4)
    for slot in range(4):
        assert private.kernel(slot)[0].std().item() == pytest.approx(init_std(conv), rel=0.05)


@pytest.mark.parametrize("convs", ["plain", "meta", "private"])
def test_channels_last_training_step(convs):
    """train.channels_last converts the model's 4-D tensors; every conv kind must survive it.

    Width 8, not 4: on torch 2.14.1's CPU build, oneDNN's channels_last 1x1 weight-gradient kernel
    (jit_avx2_1x1_convolution_bwd_weights) intermittently corrupts the heap or spins forever on 4-channel
    layers; 8 channels (one AVX2 vector) take a path that does not."""
    torch.manual_seed(0)
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=8, convs=convs)
    reference = copy.deepcopy(net)
    net = net.to(memory_format=torch.channels_last)
    xs = [torch.randn(2, 3, r, r) for r in RES]
    outs = net([x.contiguous(memory_format=torch.channels_last) for x in xs])
    sum(z.logsumexp(1).sum() for z in outs).backward()
    for out, expected in zip(outs, reference(xs)):
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- materialize and BN recalibration


def assert_plain(module: nn.Module) -> None:
    assert not any(isinstance(m, (Switchable, SwitchableBatchNorm2d)) for m in module.modules())
    kinds = {type(m) for m in module.modules()}
    assert nn.Conv2d in kinds and nn.BatchNorm2d in kinds


@pytest.mark.parametrize("convs, hidden, resolution, bn, eps", [
    ("meta", 0, 24, "nearest", "proxy"),
    ("meta", 0, 28, "nearest", "ideal"),
    ("meta", 8, 20, "nearest", "ideal"),
    ("private", 0, 16, "nearest", "proxy"),
    ("plain", 0, 28, "interpolate", "proxy"),
])
def test_materialize_gives_an_equivalent_plain_module(convs, hidden, resolution, bn, eps):
    torch.manual_seed(0)
    net = build_net("resnet_tiny", 10, RES, small_input=True, width=4, convs=convs, meta_hidden=hidden).eval()
    randomize_net(net)
    if hidden:
        for m in net.modules():
            if isinstance(m, MetaConv2d):
                with torch.no_grad():
                    m.out.normal_(std=0.05)
    plain = materialize(net, resolution, bn=bn, eps=eps)
    assert_plain(plain)
    assert not plain.training
    x = torch.randn(2, 3, resolution, resolution)
    torch.testing.assert_close(plain(x), net(x, resolution=resolution, bn=bn, eps=eps), rtol=1e-4, atol=1e-5)
    # the switchable net is untouched and still needs a route
    assert any(isinstance(m, SwitchableBatchNorm2d) for m in net.modules())
    with pytest.raises(RuntimeError):
        net.backbone(x)


def test_recalibrate_bn_is_the_exact_average_over_batches():
    bn = nn.BatchNorm2d(2, momentum=0.1)
    model = nn.Sequential(bn).eval()
    with torch.no_grad():
        bn.running_mean.fill_(7.0)  # stale statistics that must not leak into the result
    batches = [torch.randn(3, 2, 4, 4) * (k + 1) + k for k in range(4)]
    recalibrate_bn(model, batches)
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches])
    variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in batches])
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, variances.mean(0))
    assert bn.momentum == 0.1 and not model.training  # settings restored
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])
    assert bn.momentum == 0.1 and not model.training  # also after a failure


def test_init_std_matches_torchvision_init_for_depthwise_convs():
    torch.manual_seed(0)
    conv = nn.Conv2d(256, 256, 3, groups=256, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's MobileNetV2 init
    assert conv.weight.std().item() == pytest.approx(init_std(conv), rel=0.05)
