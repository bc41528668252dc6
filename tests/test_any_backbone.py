"""torchvision:/timm: backbones made resolution-switchable (backbones/external.py, norm_act.py): equal to the
library's plain model with one slot, each route equal to a plain model holding that slot's BN, every
method trains a step, an export reproduces the logits; ``resolab describe`` counts them; names and norm
layers the surgery cannot serve are one line. Small models without weights, tiny inputs, CPU."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from backbones import SwitchableBatchNorm2d, build_net
from backbones.external import build_plain
from jobspec import JobConfig
from methods import build_method
from orchestrator.cli.main import main as cli_main
from orchestrator.deploy.export import TOLERANCE, RouteChoice, export_route
from orchestrator.deploy.model_file import load_model, save_model_file

MODELS = ["timm:resnet10t", "timm:mobilenetv3_small_050", "timm:efficientnet_b0", "timm:regnetx_002",
          "torchvision:shufflenet_v2_x0_5", "torchvision:mnasnet0_5"]
CHEAP = [m for m in MODELS if m != "timm:efficientnet_b0"]  # efficientnet_b0 only in the equality checks
RES = [40, 32, 24]
CLASSES = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(resolution: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def _randomise_bn(module: nn.Module, seed: int) -> None:
    """Distinct affine parameters and statistics per BN (per slot for a switchable one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.2, 0.2), (m.running_mean, -0.2, 0.2),
                                  (m.running_var, 0.5, 1.5)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


@pytest.mark.parametrize("name", MODELS)
def test_one_slot_equals_the_plain_model_and_each_route_a_plain_model_holding_its_slot(name):
    torch.manual_seed(0)
    plain = build_plain(name, CLASSES)
    torch.manual_seed(0)
    one = build_net(name, CLASSES, [32])  # the same draws: surgery copies, it draws nothing
    assert sum(isinstance(m, SwitchableBatchNorm2d) for m in one.backbone.modules()) > 0
    for mode in ("train", "eval"):  # batch statistics, then running statistics
        plain.train(mode == "train")
        one.train(mode == "train")
        x = _images(32)
        torch.manual_seed(1)  # the same dropout masks (MNASNet's classifier) in train mode
        switched = one(x, resolution=32)
        torch.manual_seed(1)
        assert torch.equal(switched, plain(x)), mode

    net = build_net(name, CLASSES, RES[:2]).eval()
    _randomise_bn(net, seed=1)
    state = net.backbone.state_dict()
    switchable = {n for n, m in net.backbone.named_modules() if isinstance(m, SwitchableBatchNorm2d)}
    for slot, r in enumerate(RES[:2]):
        holding = type(state)((k, v[slot] if k.rsplit(".", 1)[0] in switchable and v.dim() >= 1 else v)
                              for k, v in state.items())
        holding._metadata = state._metadata  # torchvision's MNASNet reads its version from it
        twin = build_plain(name, CLASSES)
        twin.load_state_dict(holding)
        x = _images(r, seed=slot)
        with torch.no_grad():
            assert torch.allclose(net(x, resolution=r), twin.eval()(x), rtol=1e-5, atol=1e-5), (name, r)


@pytest.mark.parametrize("name", CHEAP)
def test_every_method_trains_a_step(name):
    settings = [("individual", {}, 32, [32]), ("parallel", {}, 32, RES), ("rsnet", {}, 32, RES),
                ("san", {}, 32, RES), ("san", {"convs": "private"}, 32, RES), ("rsnet", {}, 2, RES)]
    for method_name, extra, bits, resolutions in settings:
        cfg = JobConfig.parse({"model": {"backbone": name, "weight_bits": bits},
                               "method": {"name": method_name, **extra}, "data": {"resolutions": resolutions}})
        method = build_method(cfg.method, cfg.model, resolutions)
        torch.manual_seed(0)
        net = method.build(CLASSES).train()
        before = [p.detach().clone() for p in net.parameters()]
        optimizer = torch.optim.SGD(method.param_groups(net, 1e-4), lr=0.1)
        out = method.loss(net, net([_images(r) for r in resolutions]), torch.tensor([0, 3]))
        out.total.backward()
        optimizer.step()
        assert torch.isfinite(out.total), (name, method_name)
        moved = sum(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
        assert moved > len(before) // 2, (name, method_name, moved, len(before))


@pytest.mark.parametrize("name", ["timm:mobilenetv3_small_050", "torchvision:shufflenet_v2_x0_5"])
def test_an_export_at_one_resolution_reproduces_the_logits(tmp_path, name):
    cfg = JobConfig.parse({"model": {"backbone": name}, "method": {"name": "san"}, "data": {"resolutions": [32, 24]}})
    net = build_method(cfg.method, cfg.model, [32, 24]).build(CLASSES)
    _randomise_bn(net, seed=2)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "scale"):  # SAN's eps-weights away from zero: the baked kernel depends on eps
                m.scale.normal_(0, 0.05)
    loaded = load_model(save_model_file(tmp_path / "model.pt", cfg, net, CLASSES, {"kind": "test"}))
    done = export_route(loaded, RouteChoice(24), "torchscript", tmp_path / "m24.pt")
    assert done.max_rel_error <= TOLERANCE
    x = _images(24, seed=5)
    with torch.no_grad(), loaded.net.at_resolution(24):
        expected = loaded.net.backbone(x)
    with torch.no_grad():
        assert _max_diff(torch.jit.load(str(tmp_path / "m24.pt"))(x), expected) < 1e-4


def _bn_slot_params(model: nn.Module) -> int:
    return sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_describe_counts_the_plain_timm_model_plus_four_bn_slots_and_mred(capsys):
    argv = ["describe", "--backbone", "timm:resnet10t", "--method", "rsnet", "--resolutions", "224", "192", "160",
            "128", "96", "--num-classes", "1000", "--json"]
    assert cli_main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    plain = build_plain("timm:resnet10t", 1000)
    expected = sum(p.numel() for p in plain.parameters()) + 4 * _bn_slot_params(plain) + 5  # + alpha (MRED)
    assert info["total_params"] == expected
    assert info["madds"]["224"] > info["madds"]["96"] > 0

    assert cli_main(["describe", "--backbone", "torchvision:mobilenet_v3_small", "--method", "san"]) == 0
    out = capsys.readouterr().out
    plain = build_plain("torchvision:mobilenet_v3_small", 1000)
    convs = [m for m in plain.modules() if type(m) is nn.Conv2d]
    # SAN: one eps-weight per kernel weight of every conv but the stem, and four more BN slots.
    expected = (sum(p.numel() for p in plain.parameters()) + sum(c.weight.numel() for c in convs[1:])
                + 4 * _bn_slot_params(plain))
    assert out.startswith(f"torchvision:mobilenet_v3_small / san: {expected:,} params")
    assert "224 px:" in out and "96 px:" in out


@pytest.mark.parametrize("backbone, said", [
    ("timm:resnet10x", "timm has no classifier named 'resnet10x'; close names: resnet10t"),
    ("torchvision:mobilenet_v3_smal", "close names: mobilenet_v3_small"),
    ("timm:convnext_atto", "model.backbone=timm:convnext_atto: the model has LayerNorm2d layers (first: stem.1)"),
    ("torchvision:vit_b_16", "the model has LayerNorm layers"),
    ("timm:resnetv2_50x1_bit", "the model has GroupNormAct layers"),
    ("keras:resnet50", "or torchvision:<name> or timm:<name>"),
])
def test_unknown_names_and_other_norm_layers_are_one_line(capsys, backbone, said):
    try:
        code = cli_main(["describe", "--backbone", backbone])
    except SystemExit as exc:  # the argument parser's refusal (not torchvision: or timm:)
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and said in lines[0] and "Traceback" not in captured.err, captured.err


def test_convs_of_their_own_are_refused_only_where_san_or_quantization_replaces_them(capsys):
    assert cli_main(["describe", "--backbone", "timm:tf_mobilenetv3_small_minimal_100", "--method", "rsnet"]) == 0
    capsys.readouterr()
    for extra in (["--method", "san"], ["--method", "rsnet", "--weight-bits", "2"]):
        assert cli_main(["describe", "--backbone", "timm:tf_mobilenetv3_small_minimal_100", *extra]) == 2
        assert "the model has Conv2dSame convs (first: conv_stem)" in capsys.readouterr().err
