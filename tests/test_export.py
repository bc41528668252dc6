"""Export: the plain TorchScript / ONNX file computes what the switchable model computes at that route.

Round trips go import (a reference-layout state dict written out here) -> model file -> export -> load the
file back -> logits, compared with the switchable model's at every training resolution. SAN's MLP meta
nets have no reference checkpoint; they start from a resolab model file with random weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobspec import JobConfig
from orchestrator.deploy import export as export_mod
from orchestrator.cli.main import main as cli_main
from orchestrator.deploy.export import ExportError, RouteChoice, export_all, export_route
from orchestrator.deploy.model_file import ModelFileError, build_model, load_model, save_model_file
from orchestrator.deploy.reference_import import import_reference

from tests.test_import_reference import WIDTH, _bn, rsnets_tiny_state, san_tiny_state

R18_STAGES = [("layer1", 64, 64, 1), ("layer2", 64, 128, 2), ("layer3", 128, 256, 2), ("layer4", 256, 512, 2)]


def r18_state(paper: str, slots: int = 2, classes: int = 10) -> dict:
    """ResNet-18 in the reference layouts: stem conv1 7x7, BasicBlocks layer<k>.<0|1>, fc 512 -> classes."""
    g = torch.Generator().manual_seed(3)
    state = {"conv1.module.weight": torch.randn(64, 3, 7, 7, generator=g) * 0.1}
    _bn(state, "bn1", 64, slots, g)
    for stage, cin, cout, stride in R18_STAGES:
        for b in range(2):
            block, inp = f"{stage}.{b}", cin if b == 0 else cout
            convs = [("conv1", "bn1", (cout, inp, 3, 3)), ("conv2", "bn2", (cout, cout, 3, 3))]
            if b == 0 and (stride != 1 or cin != cout):
                convs.append(("downsample.0", "downsample.1", (cout, inp, 1, 1)))
            for k, (conv, bn, shape) in enumerate(convs):
                if paper == "rsnets":
                    state[f"{block}.{conv}.module.weight"] = torch.randn(shape, generator=g) * 0.05
                    _bn(state, f"{block}.{bn}", cout, slots, g)
                else:
                    numel = torch.Size(shape).numel()
                    state[f"{block}.fc{k + 1}.weight"] = torch.randn(numel, 1, generator=g) * 0.05
                    state[f"{block}.fc{k + 1}.bias"] = torch.randn(numel, generator=g) * 0.05
                    _bn(state, f"{block}.bn{k + 1}", cout, slots, g)
    state["fc.module.weight"] = torch.randn(classes, 512, generator=g) * 0.05
    state["fc.module.bias"] = torch.randn(classes, generator=g)
    return state


def _imported_file(tmp_path: Path, paper: str, backbone: str, resolutions=(224, 192)) -> Path:
    if backbone == "resnet18":
        state, width = r18_state(paper), None
    else:
        state, width = (san_tiny_state() if paper == "san" else rsnets_tiny_state()), WIDTH
    torch.save(state, tmp_path / "ref.pth")
    imported = import_reference(paper, tmp_path / "ref.pth", backbone, list(resolutions), 10, width=width)
    return save_model_file(tmp_path / "model.pt", imported.config, imported.net, 10, {"kind": f"reference-{paper}"})


def _mlp_san_file(tmp_path: Path) -> Path:
    config = JobConfig.parse({"model": {"backbone": "resnet_tiny", "small_input": True, "width": WIDTH},
                              "method": {"name": "san", "meta_hidden": 8},
                              "data": {"resolutions": [32, 24, 16], "num_classes": 10}})
    _, net = build_model(config, 10)
    with torch.no_grad():  # random weights everywhere: a fresh MLP's eps-part starts at zero
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        for m in net.modules():
            if hasattr(m, "running_var") and m.running_var is not None:
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 1.5)
    return save_model_file(tmp_path / "mlp.pt", config, net, 10, {"kind": "test"})


def _logits_agree(loaded, out: Path, route: RouteChoice):
    export_route(loaded, route, "torchscript", out)
    x = torch.randn(2, 3, route.resolution, route.resolution)
    with torch.no_grad(), loaded.net.at_resolution(route.resolution, bn=route.bn, eps=route.eps,
                                                   slot=route.slot(loaded.net)):
        expected = loaded.net.backbone(x)
    found = torch.jit.load(str(out))(x)
    torch.testing.assert_close(found, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


# SAN's reference fixes the scales of 224 and 192; RS-Nets' has no such tie, so its ResNet-18 runs smaller.
@pytest.mark.parametrize("paper,backbone,resolutions", [
    ("rsnets", "resnet_tiny", (224, 192)), ("san", "resnet_tiny", (224, 192)),
    pytest.param("rsnets", "resnet18", (64, 48), marks=pytest.mark.slow),
    pytest.param("san", "resnet18", (224, 192), marks=pytest.mark.slow)])
def test_import_export_round_trip_at_every_training_resolution(tmp_path, paper, backbone, resolutions):
    loaded = load_model(_imported_file(tmp_path, paper, backbone, resolutions))
    for r in resolutions:
        _logits_agree(loaded, tmp_path / f"r{r}.pt", RouteChoice(r))


def test_mlp_san_round_trip_and_unseen_resolution_routes(tmp_path):
    loaded = load_model(_mlp_san_file(tmp_path))
    for r in (32, 24, 16):
        _logits_agree(loaded, tmp_path / f"r{r}.pt", RouteChoice(r))
    # 28 px lies between the training resolutions 32 and 24: interpolated BN and eps(28) itself.
    _logits_agree(loaded, tmp_path / "i28.pt", RouteChoice(28, bn="interpolate", eps="ideal"))
    # ... which is another model than the proxy route (the check would not see a route mix-up otherwise).
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ideal = torch.jit.load(str(tmp_path / "i28.pt"))(x)
        proxy = loaded.net(x, resolution=28)
    assert not torch.allclose(ideal, proxy, rtol=1e-3)


def test_rsnet_interpolated_bn_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    model_file = _imported_file(tmp_path, "rsnets", "resnet_tiny")
    loaded = load_model(model_file)
    done = export_route(loaded, RouteChoice(208, bn="interpolate"), "onnx", tmp_path / "r208.onnx")
    assert done.checked_with == "onnxruntime" and done.max_rel_error < 1e-4
    import onnxruntime as ort
    x = torch.randn(4, 3, 208, 208)  # a batch size other than the export's: the batch dimension is dynamic
    (found,) = ort.InferenceSession(str(tmp_path / "r208.onnx")).run(None, {"image": x.numpy()})
    with torch.no_grad(), loaded.net.at_resolution(208, bn="interpolate"):
        expected = loaded.net.backbone(x)
    torch.testing.assert_close(torch.from_numpy(found), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_export_all_writes_every_resolution_and_an_index(tmp_path):
    loaded = load_model(_mlp_san_file(tmp_path))
    exported, index = export_all(loaded, "torchscript", tmp_path / "all")
    data = json.loads(index.read_text())
    assert [e["resolution"] for e in data["routes"]] == [32, 24, 16]
    assert all((tmp_path / "all" / e["file"]).is_file() and e["madds"] > 0 for e in data["routes"])
    assert data["input"]["mean"] == [0.485, 0.456, 0.406]
    with pytest.raises(ExportError, match="not an empty directory"):
        export_all(loaded, "torchscript", tmp_path / "all")


def test_a_mismatching_export_fails_and_writes_nothing(tmp_path, monkeypatch):
    loaded = load_model(_mlp_san_file(tmp_path))
    real = export_mod.plain_model

    def off_by_a_little(net, route):
        plain = real(net, route)
        with torch.no_grad():
            plain.fc.weight.mul_(1.01)  # logits off by 1%
        return plain
    monkeypatch.setattr(export_mod, "plain_model", off_by_a_little)
    with pytest.raises(ExportError, match="differ"):
        export_route(loaded, RouteChoice(24), "torchscript", tmp_path / "out" / "bad.pt")
    assert not list((tmp_path / "out").iterdir())  # neither the file nor its temporary


def test_bad_export_input_is_one_line_and_no_file(tmp_path, capsys):
    model_file = _mlp_san_file(tmp_path)
    out = tmp_path / "x.pt"
    with pytest.raises(SystemExit):
        cli_main(["export", str(model_file), "--resolution", "0", "--out", str(out)])
    assert "expected a whole number of at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(ExportError, match="positive"):
        export_route(load_model(model_file), RouteChoice(-8), "torchscript", out)
    assert cli_main(["export", str(model_file), "--resolution", "24", "--row", "40", "--out", str(out)]) == 2
    assert "not a training resolution" in capsys.readouterr().err
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(model_file.read_bytes()[:1000])
    assert cli_main(["export", str(truncated), "--resolution", "24", "--out", str(out)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "none.pt"), "--resolution", "24", "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".x.pt*"))


# MobileNetV2 as tonylins' code (both references) lays it out: (t, c, n, s) per stage, stem 32, last conv 1280.
MBV2_CFGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mbv2_state(paper: str, slots: int = 2, classes: int = 10) -> dict:
    g = torch.Generator().manual_seed(5)
    state = {}

    def conv(module: str, shape, bn: str):
        if paper == "rsnets":
            state[f"{module}.module.weight"] = torch.randn(shape, generator=g) * 0.1
        else:
            numel = torch.Size(shape).numel()
            state[f"{module}.weight"] = torch.randn(numel, 1, generator=g) * 0.1
            state[f"{module}.bias"] = torch.randn(numel, generator=g) * 0.1
        _bn(state, bn, shape[0], slots, g)

    san = paper == "san"
    conv("features.0.fc" if san else "features.0.0", (32, 3, 3, 3), "features.0.bn" if san else "features.0.1")
    inp, index = 32, 1
    for t, c, n, _ in MBV2_CFGS:
        for _ in range(n):
            hidden, block = inp * t, f"features.{index}"
            shapes = ([(hidden, 1, 3, 3), (c, hidden, 1, 1)] if t == 1
                      else [(hidden, inp, 1, 1), (hidden, 1, 3, 3), (c, hidden, 1, 1)])
            for k, shape in enumerate(shapes):
                if san:
                    conv(f"{block}.fc{k + 1}", shape, f"{block}.bn{k + 1}")
                else:
                    conv(f"{block}.conv.{3 * k}", shape, f"{block}.conv.{3 * k + 1}")
            inp, index = c, index + 1
    conv("conv.fc" if san else "conv.0", (1280, 320, 1, 1), "conv.bn" if san else "conv.1")
    state["classifier.module.weight"] = torch.randn(classes, 1280, generator=g) * 0.05
    state["classifier.module.bias"] = torch.randn(classes, generator=g)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("paper,resolutions", [("rsnets", (64, 48)), ("san", (224, 192))])
def test_mobilenet_v2_import_export_round_trip(tmp_path, paper, resolutions):
    torch.save({"state_dict": mbv2_state(paper)}, tmp_path / "ref.pth")
    imported = import_reference(paper, tmp_path / "ref.pth", "mobilenet_v2", list(resolutions), 10)
    features = imported.net.backbone.features
    if paper == "san":  # an expanding block's depthwise conv is its fc2
        assert torch.equal(features[2].conv[1][0].scale.flatten(), torch.load(tmp_path / "ref.pth", weights_only=True)["state_dict"]
                           ["features.2.fc2.weight"].flatten())
    loaded = load_model(save_model_file(tmp_path / "m.pt", imported.config, imported.net, 10, {}))
    _logits_agree(loaded, tmp_path / "r.pt", RouteChoice(resolutions[-1]))


def test_a_model_file_with_settings_this_version_dropped_still_loads_and_says_which(tmp_path):
    model_file = _mlp_san_file(tmp_path)
    payload = torch.load(model_file, weights_only=True)
    payload["config"]["model"]["retired_switch"] = True  # a setting an earlier resolab had
    payload["config"]["retired_section"] = {"a": 1}
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    loaded, current = load_model(old), load_model(model_file)
    assert loaded.source["dropped_config_keys"] == ["model.retired_switch", "retired_section"]
    assert "dropped_config_keys" not in current.source
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded.net(x, resolution=24), current.net(x, resolution=24))

    payload["config"]["method"]["meta_hidden"] = 16  # a kept key that changes the model: the weights must fit
    torch.save(payload, old)
    with pytest.raises(ModelFileError, match="weights do not fit"):
        load_model(old)


# ---------------------------------------------------------------- bad paths and options: one line, nothing written


def refused(capsys, code: int) -> str:
    """The one line on stderr of a command that refused its input with exit 2, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resolab: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def model_file(tmp_path) -> Path:
    return _mlp_san_file(tmp_path)


def test_export_out_problems_are_one_line_before_any_work(tmp_path, capsys, model_file):
    base = ["export", str(model_file), "--resolution", "24", "--out"]
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "is a directory; give a file path such as" in refused(capsys, cli_main([*base, str(folder)]))
    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"an earlier export")
    line = refused(capsys, cli_main([*base, str(kept)]))
    assert line == f"resolab: --out {kept} exists; pass --force to replace it, or choose another --out"
    assert kept.read_bytes() == b"an earlier export"
    assert cli_main([*base, str(kept), "--force"]) == 0  # replaced: a TorchScript file now
    assert torch.jit.load(str(kept))(torch.randn(1, 3, 24, 24)).shape == (1, 10)
    full = tmp_path / "all"
    (full / "other").mkdir(parents=True)
    line = refused(capsys, cli_main(["export", str(model_file), "--all", "--out", str(full), "--force"]))
    assert "is not an empty directory" in line and (full / "other").is_dir()  # --force never replaces a folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all", "folder", "kept.pt", "mlp.pt"]


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys, where no file can be created (even by root)")
@pytest.mark.parametrize("what", [["--resolution", "24"], ["--all"]])
def test_export_into_a_place_that_takes_no_file_is_one_line(capsys, model_file, what):
    line = refused(capsys, cli_main(["export", str(model_file), *what, "--out", "/sys/resolab-x.pt"]))
    assert line.startswith("resolab: --out /sys/resolab-x.pt: cannot create a file in /sys (")
    assert line.endswith("); choose another --out")


def test_an_export_resolution_above_the_limit_is_one_line_before_anything_is_built(tmp_path, capsys, model_file):
    line = refused(capsys, cli_main(["export", str(model_file), "--resolution", "100000", "--out", str(tmp_path / "x.pt")]))
    # 3 x 100000^2 float32 = 1.2e11 bytes
    assert line == ("resolab: --resolution 100000 is above resolab's limit of 2048 px (its input alone would take "
                    "120 GB, its activations many times more); export at 2048 px or less")
    assert "above resolab's limit of 2048 px" in refused(capsys, cli_main(
        ["export", str(model_file), "--resolution", "2049", "--out", str(tmp_path / "x.pt")]))
    export_mod.check_resolution(2048)  # the limit itself is allowed (building at 2048 px takes seconds here)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.pt"]


def test_import_reference_names_what_it_was_given(tmp_path, capsys, model_file):
    from tests.test_import_reference import rsnets_tiny_state

    torch.save(rsnets_tiny_state(), tmp_path / "ref.pth")
    script = tmp_path / "plain.pt"
    export_route(load_model(model_file), RouteChoice(24), "torchscript", script)
    out = tmp_path / "out.pt"

    def run(checkpoint, *extra):
        return cli_main(["import-reference", "rsnets", str(checkpoint), "--backbone", "resnet_tiny", "--width", "8",
                         "--resolutions", "224", "192", "--num-classes", "10", "--out", str(out), *extra])
    takes = "give the checkpoint file the reference code's training script saved"
    assert refused(capsys, run(tmp_path)) == f"resolab: {tmp_path} is a directory; {takes} (a state dict, bare or " \
                                              "under 'state_dict', usually .pth or .pth.tar)"
    assert f"none.pth: no such file; {takes}" in refused(capsys, run(tmp_path / "none.pth"))
    line = refused(capsys, run(script))
    assert "is a TorchScript file (a plain CNN, as resolab export writes one), not a checkpoint" in line and takes in line
    assert "run id" not in line  # export's hint
    assert run(tmp_path / "ref.pth") == 0
    written = out.read_bytes()
    assert "exists; pass --force" in refused(capsys, run(tmp_path / "ref.pth"))
    assert out.read_bytes() == written
    assert run(tmp_path / "ref.pth", "--force") == 0
    capsys.readouterr()
    out = tmp_path / "folder"
    out.mkdir()
    assert "is a directory; give a file path" in refused(capsys, run(tmp_path / "ref.pth"))


def test_evaluate_model_names_a_torchscript_file_bad_settings_and_its_data_flag(tmp_path, capsys, model_file):
    script = tmp_path / "plain.pt"
    export_route(load_model(model_file), RouteChoice(24), "torchscript", script)
    uri = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    line = refused(capsys, cli_main(["evaluate-model", str(script), *uri]))
    assert line == (f"resolab: {script} is a TorchScript file (a plain CNN, as resolab export writes one), not a "
                    "checkpoint with weights and config; give a resolab model file (resolab import-reference "
                    "writes one) or a job's checkpoint.pt")
    line = refused(capsys, cli_main(["evaluate-model", str(model_file), "--set", "eval.test_resolutions=[0,24]", *uri]))
    assert line == "resolab: config error: eval.test_resolutions must be a non-empty list of positive integers, got [0, 24]"
    line = refused(capsys, cli_main(["evaluate-model", str(model_file), "--set", "model.width=4", *uri]))
    assert line.startswith("resolab: config error: --set model.width: evaluate-model evaluates the model as it was "
                           "trained") and "eval.*, data.*" in line
    line = refused(capsys, cli_main(["evaluate-model", str(model_file), "--device", "tpu", *uri]))
    assert line == "resolab: --device 'tpu' is not one resolab runs on; use cpu or cuda (cuda:N for GPU N)"
    missing = tmp_path / "imagenet"
    line = refused(capsys, cli_main(["evaluate-model", str(model_file), "--data", str(missing), *uri]))
    assert line.startswith(f"resolab: dataset root not found: {missing}.")
    assert line.endswith("Fix: give --data a folder with that layout") and "data.root" not in line
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was touched


def test_evaluate_model_of_an_imported_model_needs_data(tmp_path, capsys):
    model = _imported_file(tmp_path, "rsnets", "resnet_tiny")
    uri = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    line = refused(capsys, cli_main(["evaluate-model", str(model), *uri]))
    assert line == (f"resolab: {model} holds weights imported from the rsnets reference code, trained on data resolab "
                    "cannot know: give --data ROOT, the ImageFolder (train/ and val/, e.g. ImageNet) to evaluate it on")
    folder = tmp_path / "data"
    for split in ("train", "val"):
        for c in range(3):
            (folder / split / f"c{c}").mkdir(parents=True)
    line = refused(capsys, cli_main(["evaluate-model", str(model), "--data", str(folder), *uri]))
    assert line == f"resolab: {folder}/train holds 3 classes, the model has 10 outputs: give --data the dataset it was trained on"
    assert not (tmp_path / "mlflow.db").exists()
