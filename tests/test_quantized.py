"""LQ-Nets quantizers (RS-Nets §4.1/§4.2), checked against hand computations: nearest levels by brute force,
QEM's error and closed form, the activation basis' zero-debiased moving-average least squares, straight-through
gradients, one set of quantized weights for every resolution of an RS-Net, 2-step training runs,
materialisation, describe's storage numbers, and the config errors."""
from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from analysis.describe import describe, measured_storage_bits, size_bytes, storage_bits
from backbones import build_net, materialize
from backbones.quantized import (ActivationQuantizer, FrozenActivationQuantizer, QuantizedConv2d, bit_codes,
                                 level_position, qem, quantization_error)
from backbones.switchable import Route
from jobspec import ConfigError, JobConfig
from jobspec.hashing import config_hash
from methods import build_method
from orchestrator.engine.job import run_job
from orchestrator.engine.loop import LocalRuntime


def route(slot: int = 0) -> Route:
    return Route(bn=(slot, slot, 0.0), eps=0.0, conv=slot)


def quantized_conv(out_ch=3, in_ch=4, bits=2, seed=0) -> QuantizedConv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return QuantizedConv2d(conv, bits)


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_quantized_weight_takes_the_nearest_of_2_to_the_k_levels_per_channel(bits):
    conv = quantized_conv(bits=bits)
    conv.basis.copy_(torch.rand(conv.out_channels, bits) * 0.2 + 0.01)  # any basis, not the init
    q = conv.quantized_weight().reshape(conv.out_channels, -1)
    w = conv.weight.detach().reshape(conv.out_channels, -1)
    for c in range(conv.out_channels):
        levels = [float(sum(v * b for v, b in zip(conv.basis[c].tolist(), signs)))
                  for signs in itertools.product((-1, 1), repeat=bits)]
        assert len(set(q[c].tolist())) <= 2 ** bits
        for value, got in zip(w[c].tolist(), q[c].tolist()):
            best = min(abs(value - level) for level in levels)
            assert abs(abs(value - got) - best) < 1e-6
            assert any(abs(got - level) < 1e-6 for level in levels)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_level_position_is_searchsorted_ties_included(bits):
    g = torch.Generator().manual_seed(bits)
    midpoints = torch.randn(5, 2 ** bits - 1, generator=g).sort(dim=1).values
    x = torch.randn(5, 300, generator=g)
    x[:, :midpoints.shape[1]] = midpoints  # values exactly on a midpoint go to the lower level
    expected = torch.searchsorted(midpoints, x)
    got = level_position(x, midpoints)
    assert got.dtype == torch.long and torch.equal(got, expected)
    assert torch.equal(got[:, :midpoints.shape[1]], torch.arange(midpoints.shape[1]).expand(5, -1))


def test_weight_basis_starts_from_lqnets_init():
    conv = quantized_conv(out_ch=8, in_ch=4, bits=2)
    base = 0.6745 * math.sqrt(2 / (3 * 3 * 8)) / 2  # 0.6745 * sqrt(2 / fan_out) / 2^(K-1)
    assert torch.allclose(conv.basis, torch.tensor([[base, 2 * base]] * 8))


@pytest.mark.parametrize("bits", [2, 3])
def test_qem_never_increases_the_quantization_error(bits):
    torch.manual_seed(1)
    w = torch.randn(6, 50)
    codes = bit_codes(bits, signed=True)
    basis = torch.rand(6, bits)  # a poor start, so there is something to improve
    errors = [quantization_error(w, basis, codes).item()]
    for _ in range(10):
        basis = qem(w, basis, codes, iterations=1)
        errors.append(quantization_error(w, basis, codes).item())
    assert all(b <= a * (1 + 1e-6) for a, b in zip(errors, errors[1:]))
    assert errors[-1] < errors[0] * 0.8


def test_qem_with_one_bit_is_the_mean_absolute_value():
    torch.manual_seed(2)
    w = torch.randn(4, 30)
    codes = bit_codes(1, signed=True)
    exact = qem(w, torch.full((4, 1), 0.3), codes, iterations=1, ridge=0.0)
    assert torch.allclose(exact[:, 0], w.abs().mean(dim=1), atol=1e-6)
    # The default ridge (the reference's 1e-4) changes it by ~1e-4 / 30 relative.
    assert torch.allclose(qem(w, torch.full((4, 1), 0.3), codes), exact, rtol=1e-4)


def tf_zero_debiased(fits: list[np.ndarray], decay: float = 0.9) -> list[np.ndarray]:
    """TensorFlow's assign_moving_average(zero_debias=True), as written there: a biased accumulator
    from 0 and a step count; the variable is the accumulator / (1 - decay^t) after update t."""
    biased, out = np.zeros_like(fits[0]), []
    for t, fit in enumerate(fits, start=1):
        biased = biased - (biased - fit) * (1 - decay)
        out.append(biased / (1 - decay ** t))
    return out


def test_refit_is_tf_zero_debiased_moving_average_of_one_qem_iteration():
    conv = quantized_conv(bits=2)
    init = conv.basis.clone()
    rows = lambda: conv.weight.detach().reshape(conv.out_channels, -1)  # noqa: E731
    fit1 = qem(rows(), init, conv.codes, iterations=1)
    conv.refit()
    # By hand: t = 1 gives 0.1 fit1 / (1 - 0.9) = fit1, the LQ-Nets init is gone.
    assert torch.allclose(conv.basis, fit1, rtol=1e-6) and not torch.allclose(fit1, init)
    assert int(conv.basis_updates) == 1
    fits = [fit1]
    with torch.no_grad():
        conv.weight.mul_(1.5)  # as if the optimiser moved the weights
    fits.append(qem(rows(), conv.basis, conv.codes, iterations=1))
    conv.refit()
    # t = 2: (0.9 * 0.1 fit1 + 0.1 fit2) / (1 - 0.81) = (0.09 fit1 + 0.1 fit2) / 0.19
    assert torch.allclose(conv.basis, (0.09 * fits[0] + 0.1 * fits[1]) / 0.19, rtol=1e-5)
    for _ in range(3):
        with torch.no_grad():
            conv.weight.add_(0.01 * torch.randn_like(conv.weight))
        fits.append(qem(rows(), conv.basis, conv.codes, iterations=1))
        conv.refit()
    expected = tf_zero_debiased([f.double().numpy() for f in fits])[-1]
    assert np.allclose(conv.basis.double().numpy(), expected, rtol=1e-5)
    assert int(conv.basis_updates) == 5


def test_basis_counter_is_saved_and_a_state_dict_without_it_loads_as_settled():
    conv = quantized_conv(bits=2)
    conv.refit()
    conv.refit()
    state = conv.state_dict()
    assert int(state["basis_updates"]) == 2
    fresh = quantized_conv(bits=2, seed=1)
    fresh.load_state_dict(state)
    assert int(fresh.basis_updates) == 2 and torch.equal(fresh.basis, conv.basis)
    # A state dict saved before the counter (strict load, as resume and model files do): its basis has
    # been averaged for a while already, and goes on at the plain 0.9 / 0.1 rate.
    old = {k: v for k, v in state.items() if k != "basis_updates"}
    fresh.load_state_dict(old)
    assert int(fresh.basis_updates) == 1000
    before = fresh.basis.clone()
    fitted = qem(fresh.weight.detach().reshape(fresh.out_channels, -1), before, fresh.codes, iterations=1)
    fresh.refit()
    assert torch.allclose(fresh.basis, 0.9 * before + 0.1 * fitted, rtol=1e-6)
    aq = ActivationQuantizer(2, num_slots=3, basis_mode="private")
    aq.load_state_dict({"basis": aq.basis.clone()})
    assert aq.basis_updates.tolist() == [1000, 1000, 1000]
    # A whole quantized RS-Net's state dict from before the counters loads strictly.
    net = tiny_rsnet(weight_bits=2, act_bits=2)
    saved = {k: v for k, v in net.state_dict().items() if not k.endswith("basis_updates")}
    assert len(saved) < len(net.state_dict())
    net.load_state_dict(saved)
    assert all(bool((v == 1000).all()) for k, v in net.state_dict().items() if k.endswith("basis_updates"))


def test_weight_gradient_is_the_gradient_at_the_quantized_weight():
    conv = quantized_conv(bits=2)
    x = torch.randn(2, 4, 5, 5)
    g = torch.randn(2, 3, 5, 5)
    (conv(x) * g).sum().backward()
    q = conv.quantized_weight().clone().requires_grad_(True)
    (F.conv2d(x, q, padding=1) * g).sum().backward()
    assert torch.allclose(conv.weight.grad, q.grad, atol=1e-6)


# ---------------------------------------------------------------- activations


def brute_force_codes(x: np.ndarray, basis: np.ndarray) -> np.ndarray:
    codes = np.array(list(itertools.product((0, 1), repeat=len(basis))), dtype=np.float64)
    levels = codes @ basis
    return codes[np.abs(x[:, None] - levels[None, :]).argmin(axis=1)]


def test_activation_basis_update_is_the_least_squares_solution_zero_debiased():
    torch.manual_seed(3)
    aq = ActivationQuantizer(2, num_slots=1).train()
    aq.set_route(route())
    fits = []
    for scale in (1.0, 2.0):  # two batches whose least-squares bases differ
        x = scale * F.relu(torch.randn(4, 3, 6, 6))
        codes = brute_force_codes(x.double().flatten().numpy(), aq.basis[0].double().numpy())
        fits.append(np.linalg.lstsq(codes, x.double().flatten().numpy(), rcond=None)[0])
        aq(x)
        if len(fits) == 1:  # the first update replaces LQ-Nets' initial levels with the batch's fit
            assert np.allclose(aq.basis[0].double().numpy(), fits[0], rtol=1e-5, atol=1e-6)
    # The second: (0.09 fit1 + 0.1 fit2) / 0.19, as TF's debiased accumulator gives.
    assert np.allclose(aq.basis[0].double().numpy(), (0.09 * fits[0] + 0.1 * fits[1]) / 0.19, rtol=1e-5, atol=1e-6)
    assert aq.basis_updates.tolist() == [2]


def test_basis_fits_stay_float32_under_bf16_autocast():
    # The quantizers' least-squares fits and levels are float32 maths even inside a bf16 training
    # step: the same batch moves the basis exactly as it does without autocast.
    torch.manual_seed(3)
    x = F.relu(torch.randn(4, 3, 6, 6))
    moved = []
    for precision in (None, torch.bfloat16):
        aq = ActivationQuantizer(2, num_slots=1)
        aq.set_route(route())
        aq.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision is not None):
            aq(x)
        moved.append(aq.basis[0].clone())
    assert torch.allclose(moved[0], moved[1], rtol=1e-6, atol=1e-7)


def test_activation_basis_does_not_move_in_eval_or_without_grad():
    aq = ActivationQuantizer(2, num_slots=1)
    aq.set_route(route())
    x = F.relu(torch.randn(2, 3, 4, 4))
    before = aq.basis.clone()
    aq.eval()
    aq(x)
    assert torch.equal(aq.basis, before)
    aq.train()
    with torch.no_grad():
        aq(x)
    assert torch.equal(aq.basis, before)


def test_activation_gradient_is_zero_above_the_top_level_and_passes_below():
    aq = ActivationQuantizer(2, num_slots=1).eval()
    aq.set_route(route())
    top = float(aq.basis[0].sum())  # levels {0, v1, v2, v1 + v2}
    x = torch.tensor([0.0, 0.1, 0.5, top - 0.01, top + 0.01, top + 2.0], requires_grad=True)
    y = aq(x)
    y.sum().backward()
    assert x.grad.tolist() == [1, 1, 1, 1, 0, 0]
    assert set(y.tolist()) <= {0.0, *aq.basis[0].tolist(), top}


@pytest.mark.parametrize("mode, moved", [("shared", [0]), ("private", [1]), ("fixed", [])])
def test_activation_basis_modes(mode, moved):
    """Shared: one basis, moved at any resolution; private: the slot's own row; fixed: moved only at slot 0."""
    aq = ActivationQuantizer(2, num_slots=3, basis_mode=mode).train()
    before = aq.basis.clone()
    aq.set_route(route(1))
    aq(F.relu(torch.randn(2, 3, 4, 4)))
    changed = [i for i in range(aq.basis.shape[0]) if not torch.equal(aq.basis[i], before[i])]
    assert changed == moved
    assert [i for i, n in enumerate(aq.basis_updates.tolist()) if n] == moved  # each row counts its own updates


# ---------------------------------------------------------------- in a network


def tiny_rsnet(**model):
    cfg = JobConfig.parse({"model": {"backbone": "preact_resnet_tiny", "width": 4, **model},
                           "method": {"name": "rsnet"}, "data": {"resolutions": [32, 24, 16]}}).validate()
    return build_method(cfg.method, cfg.model, cfg.data.resolutions).build(10)


def test_every_conv_but_the_stem_is_quantized_and_the_fc_stays_full_precision():
    net = tiny_rsnet(weight_bits=2, act_bits=2)
    convs = [m for m in net.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert type(convs[0]) is nn.Conv2d and all(isinstance(c, QuantizedConv2d) for c in convs[1:])
    assert type(net.backbone.fc) is nn.Linear
    assert sum(isinstance(m, ActivationQuantizer) for m in net.modules()) == 6  # per block: its input, between its convs


def test_a_quantized_rsnet_feeds_every_resolution_the_same_quantized_weights():
    net = tiny_rsnet(weight_bits=2, act_bits=2).train()
    seen = []
    conv = net.backbone.layers[1].residual[0]
    conv.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0].detach(), out.detach())))
    before = conv.basis.clone()
    net([torch.randn(2, 3, r, r) for r in net.resolutions])
    assert len(seen) == 3
    q = conv.quantized_weight()  # after the step's one refit
    assert not torch.equal(conv.basis, before)
    for x, out in seen:
        assert torch.allclose(out, F.conv2d(x, q, stride=2, padding=1), atol=1e-5)
    assert int(conv.basis_updates) == 1  # refit once per step, not once per resolution
    once = copy.deepcopy(conv)
    once.basis.copy_(before)
    once.basis_updates.zero_()
    once.refit()
    assert torch.allclose(once.basis, conv.basis)


def test_a_step_quantizes_each_conv_once_and_the_optimiser_step_makes_it_quantize_anew():
    net = tiny_rsnet(weight_bits=2).train()
    conv = net.backbone.layers[1].residual[0]
    quantizations, weights = [], []
    quantize, conv_forward = conv.quantized_weight, conv._conv_forward
    conv.quantized_weight = lambda: quantizations.append(1) or quantize()
    conv._conv_forward = lambda x, w, b: weights.append(w) or conv_forward(x, w, b)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    xs = [torch.randn(2, 3, r, r) for r in net.resolutions]

    sum(out.sum() for out in net(xs)).backward()
    assert len(quantizations) == 1 and len(weights) == 3
    assert weights[1] is weights[0] and weights[2] is weights[0]  # one tensor, saved once for the backward
    torch.testing.assert_close(weights[0], quantize())  # w + (q - w): q up to rounding
    grad = conv.weight.grad.clone()
    assert grad.abs().sum() > 0

    optimizer.step()  # new weights: the next step quantizes them, not the old ones
    optimizer.zero_grad()
    sum(out.sum() for out in net(xs)).backward()
    assert len(quantizations) == 2 and weights[3] is not weights[0]
    torch.testing.assert_close(weights[3], quantize())
    assert not torch.allclose(weights[3], weights[0])

    net.eval()
    with torch.no_grad():  # evaluation: quantized once, then shared by every batch and resolution
        net(xs[0], resolution=32)
        net(xs[2], resolution=16)
    assert len(quantizations) == 3 and weights[-1] is weights[-2] and weights[-1].grad_fn is None
    assert materialize(net, 24) is not None  # the cached weight does not get in deepcopy's way


def test_materialize_bakes_quantized_weights_and_frozen_activation_levels():
    net = tiny_rsnet(weight_bits=2, act_bits=2, act_basis="private").eval()
    x = torch.randn(2, 3, 24, 24)
    plain = materialize(net, 24)
    assert not any(isinstance(m, (QuantizedConv2d, ActivationQuantizer)) for m in plain.modules())
    assert any(isinstance(m, FrozenActivationQuantizer) for m in plain.modules())
    assert torch.allclose(plain(x), net(x, resolution=24), atol=1e-5)
    for conv in (m for m in plain.modules() if isinstance(m, nn.Conv2d) and m is not plain.conv1):
        rows = conv.weight.reshape(conv.out_channels, -1)
        assert all(len(set(r.tolist())) <= 4 for r in rows)
    frozen = [m for m in plain.modules() if isinstance(m, FrozenActivationQuantizer)]
    before = [m.basis.clone() for m in frozen]
    plain.train()(x).sum().backward()  # train mode (e.g. BN recalibration) leaves the baked levels alone
    assert all(torch.equal(m.basis, b) for m, b in zip(frozen, before))


@pytest.mark.parametrize("method", ["individual", "rsnet"])
@pytest.mark.parametrize("bits", [(2, 32), (2, 2)])
def test_two_training_steps_on_the_tiny_backbone(tiny_job, tmp_path, method, bits):
    weight_bits, act_bits = bits
    overrides = {"method.name": method, "model.backbone": "preact_resnet_tiny", "model.weight_bits": weight_bits,
                 "model.act_bits": act_bits, "train.schedule": "step", "train.milestones": [1]}
    if method == "individual":
        overrides["data.resolutions"] = [32]
    cfg = tiny_job(**overrides)
    result = run_job(cfg, LocalRuntime(tmp_path, device="cpu", log=lambda _: None), job_hash="q")
    net = result.trained.net
    assert math.isfinite(result.trained.history[0]["loss/total"])
    convs = [m for m in net.modules() if isinstance(m, QuantizedConv2d)]
    assert convs and all(not torch.equal(c.basis, c.basis.new_tensor(0)) for c in convs)
    acts = [m for m in net.modules() if isinstance(m, ActivationQuantizer)]
    assert bool(acts) == (act_bits != 32)
    values = result.matrix.frame[["top1", "top5"]].to_numpy()
    assert ((values >= 0) & (values <= 100)).all()


# ---------------------------------------------------------------- describe: storage and size


def test_storage_bits_by_hand():
    assert storage_bits(2, 1) == 2  # one RS-Net
    assert storage_bits(2, 5) == pytest.approx(math.log2(20))  # five I-Nets: the paper's ≈ 4.3
    assert round(storage_bits(2, 5), 1) == 4.3
    assert storage_bits(32, 5) == 32


def test_measured_storage_counts_distinct_values_per_channel_across_the_set():
    a = build_net("resnet_tiny", 10, [32], bn="shared", small_input=True, width=4, weight_bits=2)
    b = copy.deepcopy(a)
    assert measured_storage_bits([a]) == 2
    assert measured_storage_bits([a, b]) == 2  # identical models share their 4 values
    for m in b.modules():
        if isinstance(m, QuantizedConv2d):
            m.basis.mul_(1.5)  # other levels: 8 distinct values per channel
    assert measured_storage_bits([a, b]) == 3


def test_describe_storage_and_size_on_a_tiny_model_by_hand():
    cfg = JobConfig.parse({"model": {"backbone": "resnet_tiny", "width": 4, "small_input": True, "weight_bits": 2},
                           "method": {"name": "individual"}, "data": {"resolutions": [32, 16]}})  # as `resolab describe`
    info = describe(cfg, 10)
    # resnet_tiny width 4: stem 3*4*9 (fp32); quantized 3x3 convs 4*4*9 * 2 + 4*8*9 + 8*8*9 + 8*16*9 + 16*16*9
    # and 1x1 downsamples 4*8 + 8*16; BN (4+4+4 + 8+8+8 + 16+16+16) * 2; FC 16*10 + 10.
    quantized = 2 * 144 + 288 + 576 + 1152 + 2304 + 32 + 128
    full = 108 + 2 * 84 + 170
    channels = 4 + 4 + 8 + 8 + 8 + 16 + 16 + 16  # one 2-float basis per output channel of every quantized conv
    per_model_bits = quantized * 2 + (full + 2 * channels) * 32
    assert info["total_params"] == 2 * (quantized + full)
    assert info["storage_bits"] == round(math.log2(2 * 4), 2)  # two I-Nets: log2(2 * 2^2) = 3 bits
    assert info["size_MB"] == round(2 * per_model_bits / 8 / 2**20, 2)
    net = build_method(cfg.method, cfg.model, [32]).build(10)
    assert size_bytes([net]) == per_model_bits / 8
    rsnet = describe(JobConfig.parse({**cfg.to_dict(), "method": {"name": "rsnet"}}).validate(), 10)
    assert rsnet["storage_bits"] == 2


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("key, value", [("weight_bits", 9), ("act_bits", 0), ("weight_bits", 16)])
def test_a_bit_width_outside_1_to_8_is_a_config_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"model\.{key}.*got {value}"):
        JobConfig.parse({"model": {"backbone": "preact_resnet18", key: value}})


def test_quantized_activations_need_a_preact_backbone():
    with pytest.raises(ConfigError, match=r"model\.act_bits=2.*preact_resnet18, preact_resnet50, preact_resnet_tiny.*"
                                          r"model\.backbone=preact_resnet18"):
        JobConfig.parse({"model": {"backbone": "resnet18", "act_bits": 2}}).validate()
    JobConfig.parse({"model": {"backbone": "resnet18", "weight_bits": 2}}).validate()  # weights alone: any backbone


def test_san_cannot_be_quantized():
    with pytest.raises(ConfigError, match=r"model\.weight_bits=2"):
        JobConfig.parse({"model": {"weight_bits": 2}, "method": {"name": "san"}}).validate()


def test_full_precision_keeps_every_existing_config_hash():
    plain = JobConfig()
    explicit = JobConfig.parse({"model": {"weight_bits": 32, "act_bits": 32, "act_basis": "shared"}})
    assert config_hash(plain) == config_hash(explicit)
    assert config_hash(JobConfig.parse({"model": {"weight_bits": 2}})) != config_hash(plain)
