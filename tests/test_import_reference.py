"""The papers' checkpoints become resolab models with every weight where it belongs; bad ones are refused.

The reference layouts are written out here (key names and shapes), not taken from the reference code:
RS-Nets wraps convs and the FC in ``ModuleParallel`` (``<name>.module.weight``) and keeps one BN per
resolution (``<name>.bn_<i>.*``); SAN generates each block conv from ``nn.Linear(1, numel)``
(``<block>.fc<k>.weight`` (numel, 1) = our eps-scale, ``.bias`` (numel,) = our base), keeps a plain stem
conv and carries torchvision's downsample branch unused. RS-Nets' training script registers the MRED
weights ``alpha`` on the model before DataParallel and saves ``model.state_dict()``: ``module.alpha``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from orchestrator.cli.main import main as cli_main
from orchestrator.deploy.model_file import load_model
from orchestrator.deploy.reference_import import ImportMismatch, import_reference

RES = [224, 192]  # SAN's reference feeds slot i the scale 0.7 - 0.1 i: 224, 192, ... only
WIDTH = 8  # resnet_tiny width 8, 10 classes
# Our resnet_tiny's convs: (block, conv name in torchvision's layout, kernel shape).
TINY_CONVS = [
    ("layers.0", "conv1", (8, 8, 3, 3)), ("layers.0", "conv2", (8, 8, 3, 3)),
    ("layers.1", "conv1", (16, 8, 3, 3)), ("layers.1", "conv2", (16, 16, 3, 3)),
    ("layers.1", "downsample.0", (16, 8, 1, 1)),
    ("layers.2", "conv1", (32, 16, 3, 3)), ("layers.2", "conv2", (32, 32, 3, 3)),
    ("layers.2", "downsample.0", (32, 16, 1, 1)),
]
SAN_NAME = {"conv1": "fc1", "conv2": "fc2", "downsample.0": "fc3"}  # SAN's BasicBlock names
BN_OF = {"conv1": "bn1", "conv2": "bn2", "downsample.0": "downsample.1"}
SAN_BN = {"bn1": "bn1", "bn2": "bn2", "downsample.1": "bn3"}


def _bn(state, name, channels, slots, g):
    for i in range(slots):
        state[f"{name}.bn_{i}.weight"] = torch.rand(channels, generator=g) + 0.5
        state[f"{name}.bn_{i}.bias"] = torch.randn(channels, generator=g)
        state[f"{name}.bn_{i}.running_mean"] = torch.randn(channels, generator=g)
        state[f"{name}.bn_{i}.running_var"] = torch.rand(channels, generator=g) + 0.5
        state[f"{name}.bn_{i}.num_batches_tracked"] = torch.tensor(7 + i)


def rsnets_tiny_state(slots=len(RES), classes=10, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {"conv1.module.weight": torch.randn(8, 3, 3, 3, generator=g)}
    _bn(state, "bn1", 8, slots, g)
    for block, conv, shape in TINY_CONVS:
        state[f"{block}.{conv}.module.weight"] = torch.randn(shape, generator=g) * 0.3
        _bn(state, f"{block}.{BN_OF[conv]}", shape[0], slots, g)
    state["fc.module.weight"] = torch.randn(classes, 4 * WIDTH, generator=g)
    state["fc.module.bias"] = torch.randn(classes, generator=g)
    return state


def san_tiny_state(slots=len(RES), classes=10, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {"conv1.module.weight": torch.randn(8, 3, 3, 3, generator=g)}  # the plain stem
    _bn(state, "bn1", 8, slots, g)
    for block, conv, shape in TINY_CONVS:
        numel = torch.Size(shape).numel()
        state[f"{block}.{SAN_NAME[conv]}.weight"] = torch.randn(numel, 1, generator=g) * 0.3
        state[f"{block}.{SAN_NAME[conv]}.bias"] = torch.randn(numel, generator=g) * 0.3
        _bn(state, f"{block}.{SAN_BN[BN_OF[conv]]}", shape[0], slots, g)
        if conv == "downsample.0":  # built by _make_layer, never run by SAN's blocks
            state[f"{block}.downsample.0.module.weight"] = torch.zeros(shape)
            _bn(state, f"{block}.downsample.1", shape[0], slots, g)
    state["fc.module.weight"] = torch.randn(classes, 4 * WIDTH, generator=g)
    state["fc.module.bias"] = torch.randn(classes, generator=g)
    return state


def _save(path: Path, state: dict, wrap: bool, prefix: bool) -> Path:
    if prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": state, "epoch": 120} if wrap else state, path)
    return path


def _import(paper, path, **kw):
    return import_reference(paper, path, "resnet_tiny", kw.pop("resolutions", RES), kw.pop("classes", 10), **kw,
                            width=WIDTH)


@pytest.mark.parametrize("wrap,prefix", [(False, False), (True, True)])
def test_rsnets_weights_land_where_they_should(tmp_path, wrap, prefix):
    state = rsnets_tiny_state()
    net = _import("rsnets", _save(tmp_path / "rs.pth", state, wrap, prefix)).net
    b = net.backbone
    assert torch.equal(b.conv1.weight, state["conv1.module.weight"])
    assert torch.equal(b.layers[1].downsample[0].weight, state["layers.1.downsample.0.module.weight"])
    assert torch.equal(b.fc.bias, state["fc.module.bias"])
    for i in range(len(RES)):
        assert torch.equal(b.layers[2].bn2.running_var[i], state[f"layers.2.bn2.bn_{i}.running_var"])
        assert torch.equal(b.layers[1].downsample[1].weight[i], state[f"layers.1.downsample.1.bn_{i}.weight"])
        assert int(b.bn1.num_batches_tracked[i]) == 7 + i


def test_san_weights_land_where_they_should(tmp_path):
    state = san_tiny_state()
    imported = _import("san", _save(tmp_path / "san.pth", state, wrap=True, prefix=True))
    b = imported.net.backbone
    # The reference's ResNet stem is a plain conv shared by every resolution, and so is ours.
    assert type(b.conv1) is nn.Conv2d and torch.equal(b.conv1.weight, state["conv1.module.weight"])
    assert imported.config.method.meta_stem is None  # the reference's choice, not a setting of its own
    conv = b.layers[1].conv2
    assert torch.equal(conv.base, state["layers.1.fc2.bias"].view(16, 16, 3, 3))
    assert torch.equal(conv.scale, state["layers.1.fc2.weight"].view(16, 16, 3, 3))
    # The live shortcut is fc3/bn3, not the unused downsample branch.
    assert torch.equal(b.layers[2].downsample[0].base, state["layers.2.fc3.bias"].view(32, 16, 1, 1))
    assert torch.equal(b.layers[2].downsample[1].running_mean[1], state["layers.2.bn3.bn_1.running_mean"])
    # The reference's kernel at slot i is Linear(0.7 - 0.1 i) = bias + (0.7 - 0.1 i) * weight.
    for i, r in enumerate(RES):
        linear = torch.nn.Linear(1, 16 * 16 * 9)
        linear.weight.data, linear.bias.data = state["layers.1.fc2.weight"], state["layers.1.fc2.bias"]
        expected = linear(torch.tensor([0.7 - 0.1 * i])).view(16, 16, 3, 3)
        torch.testing.assert_close(conv.generate(r / 320), expected)
    assert any("downsample" in note for note in imported.notes)


def test_wrong_architecture_names_key_and_fit(tmp_path):
    # A SAN checkpoint imported as an RS-Net: an unknown key, named, with a hint.
    path = _save(tmp_path / "san.pth", san_tiny_state(), wrap=False, prefix=False)
    with pytest.raises(ImportMismatch, match=r"key '.*(fc\d|module).*'.*try `import-reference san`"):
        _import("rsnets", path)
    # Three BN slots imported as two: an unknown key; the hint gives the slot count that fits.
    path = _save(tmp_path / "three.pth", rsnets_tiny_state(slots=3), wrap=False, prefix=False)
    with pytest.raises(ImportMismatch, match=r"bn_2.*3 BN slots"):
        _import("rsnets", path)
    # 100 classes imported as 10: a shape mismatch naming both shapes.
    path = _save(tmp_path / "c100.pth", rsnets_tiny_state(classes=100), wrap=False, prefix=False)
    with pytest.raises(ImportMismatch, match=r"fc.module.weight' has shape \[100, 32\], expected \[10, 32\].*--num-classes 100"):
        _import("rsnets", path)
    # SAN at resolutions its reference scales do not match.
    path = _save(tmp_path / "san2.pth", san_tiny_state(), wrap=False, prefix=False)
    with pytest.raises(ImportMismatch, match="224 192"):
        _import("san", path, resolutions=[64, 32])


def test_a_checkpoint_with_pickled_objects_is_refused_by_name_and_the_named_allow_list_loads_it(tmp_path):
    import argparse

    from orchestrator.deploy.model_file import ModelFileError, read_payload

    # Released checkpoints often pickle the training script's argparse.Namespace beside the weights.
    path = tmp_path / "released.pth"
    torch.save({"state_dict": rsnets_tiny_state(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(ModelFileError) as refused:
        read_payload(path)
    message = str(refused.value)
    assert "argparse.Namespace" in message and "safe_globals" in message and "weights_only=False" not in message
    # The way out the message names: the allow-list, still weights_only=True.
    with torch.serialization.safe_globals([argparse.Namespace]):
        payload = torch.load(path, weights_only=True)
    assert payload["args"].lr == 0.1 and set(payload["state_dict"]) == set(rsnets_tiny_state())


def test_cli_import_errors_leave_no_file(tmp_path, capsys):
    good = _save(tmp_path / "rs.pth", rsnets_tiny_state(), wrap=True, prefix=False)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out = tmp_path / "out" / "model.pt"
    base = ["import-reference", "rsnets", "--backbone", "resnet_tiny", "--num-classes", "10", "--width", "8",
            "--out", str(out)]
    assert cli_main(base[:2] + [str(truncated)] + base[2:] + ["--resolutions", "224", "192"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert cli_main(base[:2] + [str(good)] + base[2:] + ["--resolutions", "224", "192", "160"]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "2 BN slots" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(out.parent.glob(".*"))  # no file, no temporary left over
    with pytest.raises(SystemExit):  # argparse: a resolution <= 0
        cli_main(base[:2] + [str(good)] + base[2:] + ["--resolutions", "224", "0"])
    assert "expected a whole number of at least 1, got 0" in capsys.readouterr().err
    # The good one, through the CLI: a model file that loads with weights_only=True.
    assert cli_main(base[:2] + [str(good)] + base[2:] + ["--resolutions", "224", "192"]) == 0
    assert "MRED alpha" in capsys.readouterr().out
    payload = torch.load(out, weights_only=True)
    assert payload["format"] == "resolab-model/1" and payload["config"]["method"]["name"] == "rsnet"
    assert load_model(out).net.resolutions == RES


# ----------------------------------------------------------------- a checkpoint as RS-Nets' script saves it


class _Shared(nn.Module):
    """The reference's wrapper of a shared layer: one module (``.module``) run on every resolution's tensor."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, xs):
        return [self.module(x) for x in xs]


class _PrivateBN(nn.Module):
    """One BatchNorm2d per resolution, ``bn_<i>``, slot i for input i."""

    def __init__(self, channels: int, slots: int):
        super().__init__()
        for i in range(slots):
            setattr(self, f"bn_{i}", nn.BatchNorm2d(channels))

    def forward(self, xs):
        return [getattr(self, f"bn_{i}")(x) for i, x in enumerate(xs)]


class _Block(nn.Module):
    """torchvision's BasicBlock names (conv1, bn1, conv2, bn2, downsample.0/.1), run on lists of tensors."""

    def __init__(self, cin: int, cout: int, stride: int, slots: int):
        super().__init__()
        self.conv1 = _Shared(nn.Conv2d(cin, cout, 3, stride, 1, bias=False))
        self.bn1 = _PrivateBN(cout, slots)
        self.conv2 = _Shared(nn.Conv2d(cout, cout, 3, 1, 1, bias=False))
        self.bn2 = _PrivateBN(cout, slots)
        self.downsample = (nn.Sequential(_Shared(nn.Conv2d(cin, cout, 1, stride, bias=False)), _PrivateBN(cout, slots))
                           if stride != 1 or cin != cout else None)

    def forward(self, xs):
        out = self.bn2(self.conv2([F.relu(o) for o in self.bn1(self.conv1(xs))]))
        shortcut = self.downsample(xs) if self.downsample is not None else xs
        return [F.relu(o + s) for o, s in zip(out, shortcut)]


class ReferenceTinyRSNet(nn.Module):
    """resnet_tiny (3x3 stride-1 stem, stages w, 2w, 4w of one BasicBlock) in RS-Nets' parallel layout."""

    def __init__(self, slots: int, classes: int = 10, width: int = WIDTH):
        super().__init__()
        self.conv1 = _Shared(nn.Conv2d(3, width, 3, 1, 1, bias=False))
        self.bn1 = _PrivateBN(width, slots)
        self.layers = nn.Sequential(_Block(width, width, 1, slots), _Block(width, 2 * width, 2, slots),
                                    _Block(2 * width, 4 * width, 2, slots))
        self.fc = _Shared(nn.Linear(4 * width, classes))

    def forward(self, xs):
        xs = self.layers([F.relu(x) for x in self.bn1(self.conv1(xs))])
        return self.fc([x.mean((2, 3)) for x in xs])


def save_as_rsnets_script(path: Path, alpha: list[float], slots: int = len(RES)) -> nn.Module:
    """As non-quantization/imagenet.py does: alpha registered on the model, then DataParallel, then
    {'state_dict': model.state_dict(), ...} with the optimizer's state beside it. Returns the model (eval)."""
    torch.manual_seed(5)
    model = ReferenceTinyRSNet(slots)
    model.register_parameter("alpha", nn.Parameter(torch.tensor(alpha)))
    wrapped = nn.DataParallel(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    wrapped.train()  # one step so that BN statistics and the optimizer's momentum are a trained model's
    outputs = wrapped([torch.randn(4, 3, r, r) for r in (32, 24, 16)[:slots]])
    sum(o.square().mean() for o in outputs).backward()
    optimizer.step()
    with torch.no_grad():  # BN affine and statistics away from their initial 1 / 0 so that a wrong slot shows
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_(), m.running_var.uniform_(0.5, 2)
    torch.save({"epoch": 120, "arch": "parallel_resnet_tiny", "state_dict": wrapped.state_dict(), "best_acc0": 71.5,
                "best_acc": 69.25, "optimizer": optimizer.state_dict()}, path)
    return model.eval()


def test_a_checkpoint_saved_as_the_rsnets_script_saves_it_imports_exports_and_keeps_alpha(tmp_path, capsys):
    from orchestrator.deploy.export import RouteChoice, export_route

    path, out = tmp_path / "checkpoint.pth.tar", tmp_path / "rsnet.pt"
    alpha = [0.8, -0.3]
    reference = save_as_rsnets_script(path, alpha)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert "module.alpha" in saved and all(k.startswith("module.") for k in saved)
    assert cli_main(["import-reference", "rsnets", str(path), "--backbone", "resnet_tiny", "--width", str(WIDTH),
                     "--resolutions", "32", "24", "--num-classes", "10", "--out", str(out)]) == 0
    weights = torch.softmax(torch.tensor(alpha), 0).tolist()
    assert f"softmax(alpha) = {weights[0]:.3f} (32 px), {weights[1]:.3f} (24 px)" in capsys.readouterr().out
    loaded = load_model(out)
    assert torch.equal(loaded.net.mred.alpha, torch.tensor(alpha))
    # Where resolab reports MRED weights (the mred_weight/r<res> metrics): softmax of the imported alpha.
    reported = loaded.method.epoch_metrics(loaded.net)
    assert reported == pytest.approx({"mred_weight/r32": weights[0], "mred_weight/r24": weights[1]}, abs=1e-7)
    assert weights[0] == pytest.approx(0.7503, abs=1e-4)  # e^0.8 / (e^0.8 + e^-0.3), by hand
    # The reference's logits at every resolution, from the imported model and from its TorchScript export.
    xs = [torch.randn(3, 3, 32, 32), torch.randn(3, 3, 24, 24)]
    with torch.no_grad():
        expected = reference(xs)
        for slot, (r, x) in enumerate(zip((32, 24), xs)):
            torch.testing.assert_close(loaded.net(x, resolution=r), expected[slot], rtol=1e-5, atol=1e-5)
        export_route(loaded, RouteChoice(24), "torchscript", tmp_path / "r24.pt")
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "r24.pt"))(xs[1]), expected[1], rtol=1e-5, atol=1e-5)


def test_alpha_of_another_resolution_count_is_refused_naming_the_fix(tmp_path, capsys):
    path = tmp_path / "three.pth.tar"
    save_as_rsnets_script(path, [0.0, 0.1, 0.2], slots=3)
    with pytest.raises(ImportMismatch, match=r"key 'alpha' has shape \[3\], expected \[2\]; .*give --resolutions 3 sizes"):
        _import("rsnets", path, resolutions=[32, 24])
    state = torch.load(path, weights_only=True)["state_dict"]
    state["module.alpha"] = torch.ones(2, 2)
    torch.save({"state_dict": state}, path)
    with pytest.raises(ImportMismatch, match=r"key 'alpha' has shape \[2, 2\].*not an RS-Nets checkpoint"):
        _import("rsnets", path, resolutions=[32, 24, 16])
    # The three-resolution checkpoint without the bad alpha imports at three resolutions.
    del state["module.alpha"]
    torch.save({"state_dict": state}, path)
    imported = _import("rsnets", path, resolutions=[32, 24, 16])
    assert torch.equal(imported.net.mred.alpha, torch.ones(3)) and "no 'alpha'" in " ".join(imported.notes)
