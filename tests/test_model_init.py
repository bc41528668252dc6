"""``model.init``: a switchable net started from a plain model's state dict file (backbones/init_from.py)
equals that model at every resolution; a file that does not fit is one line naming the key and both
shapes; the file's sha256, not its path, is in the config hash; and the fine-tuning suite's smoke job
(timm:resnet10t started from a file) trains with ``resolab train`` and writes its matrix."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from backbones.external import build_plain
from jobspec import ConfigError, JobConfig, config_hash
from jobspec.hashing import hashed_part
from methods import build_method
from orchestrator.cli.main import main as cli_main

REPO = Path(__file__).resolve().parent.parent
FINETUNE = REPO / "experiments" / "finetune" / "resnet50.yaml"
RES = [40, 32, 24]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _plain_file(tmp_path: Path, name: str = "timm:resnet10t", classes: int = 10, wrap=None) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(3)
    plain = build_plain(name, classes).eval()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # trained-looking statistics, so that the BN slots' copies matter
        for m in plain.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    state = plain.state_dict()
    path = tmp_path / f"{name.replace(':', '_')}-{classes}.pth"
    torch.save(wrap(state) if wrap else state, path)
    return path, plain


def _config(backbone: str, init: Path, method: dict, resolutions=RES) -> JobConfig:
    return JobConfig.parse({"model": {"backbone": backbone, "init": str(init)}, "method": method,
                            "data": {"resolutions": resolutions}}).validate()


@pytest.mark.parametrize("method", [{"name": "rsnet"}, {"name": "san"}, {"name": "san", "meta_hidden": 8},
                                    {"name": "san", "convs": "private"}, {"name": "san", "meta_stem": True}])
def test_a_net_started_from_a_plain_file_equals_it_at_every_resolution(tmp_path, method):
    path, plain = _plain_file(tmp_path)
    cfg = _config("timm:resnet10t", path, method)
    net = build_method(cfg.method, cfg.model, RES).build_initialised(10).eval()
    with torch.no_grad():
        for r in RES:
            x = torch.randn(2, 3, r, r, generator=torch.Generator().manual_seed(r))
            assert torch.equal(net(x, resolution=r), plain(x)), r


def test_a_built_in_backbone_starts_from_torchvision_naming_in_a_wrapper(tmp_path):
    """resolab's resnet_tiny from a {'state_dict': ...} file with DDP's 'module.' prefix."""
    torch.manual_seed(0)
    cfg = JobConfig.parse({"model": {"backbone": "resnet_tiny", "small_input": True}, "method": {"name": "individual"},
                           "data": {"resolutions": [32]}})
    plain = build_method(cfg.method, cfg.model, [32]).build(10).backbone.eval()
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in plain.state_dict().items()}, "epoch": 90}, path)
    cfg = _config("resnet_tiny", path, {"name": "san"}, [32, 24])
    cfg.model.small_input = True
    net = build_method(cfg.method, cfg.model, [32, 24]).build_initialised(10).eval()
    with torch.no_grad():
        for r in (32, 24):
            x = torch.randn(2, 3, r, r)
            assert torch.equal(net(x, resolution=r), plain(x))


def test_a_file_that_does_not_fit_names_the_first_key_and_both_shapes(tmp_path):
    path, _ = _plain_file(tmp_path, classes=1000)
    cfg = _config("timm:resnet10t", path, {"name": "rsnet"})
    with pytest.raises(ConfigError) as caught:
        build_method(cfg.method, cfg.model, RES).build_initialised(10, error=ConfigError)
    assert str(caught.value) == (
        f"'fc.weight' has shape [1000, 512] in model.init={path} but [10, 512] in the net; save the state dict of "
        "the same plain model (same backbone, num_classes and small_input)")
    other, _ = _plain_file(tmp_path, name="torchvision:mnasnet0_5")
    cfg = _config("timm:resnet10t", other, {"name": "rsnet"})
    with pytest.raises(ConfigError, match=r"has no 'conv1.0.weight' \(shape \[24, 3, 3, 3\] in the net\)"):
        build_method(cfg.method, cfg.model, RES).build_initialised(10, error=ConfigError)


def test_the_files_sha256_not_its_path_is_in_the_config_hash(tmp_path):
    path, _ = _plain_file(tmp_path)
    tree = {"model": {"backbone": "timm:resnet10t"}, "data": {"resolutions": RES}}
    without = JobConfig.parse(tree)
    assert "init" not in hashed_part(without.to_dict())["model"], "unset: every existing hash stays"
    with_init = _config("timm:resnet10t", path, {"name": "rsnet"})
    moved = tmp_path / "elsewhere" / "weights.pth"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashed_part(with_init.to_dict())["model"]["init"] == f"sha256:{digest}"
    assert config_hash(_config("timm:resnet10t", moved, {"name": "rsnet"})) == config_hash(with_init)
    assert config_hash(with_init) != config_hash(without)
    other, _ = _plain_file(tmp_path, classes=7)
    shutil.copy(other, moved)  # new weights under the old name: another job
    assert config_hash(_config("timm:resnet10t", moved, {"name": "rsnet"})) != config_hash(with_init)
    with pytest.raises(ConfigError, match="model.init=/no/such.pth: no such file"):
        _config("timm:resnet10t", Path("/no/such.pth"), {"name": "rsnet"})


def test_the_finetune_smoke_job_trains_from_a_file_and_a_misfit_is_one_line(tmp_path, monkeypatch, capsys):
    """The suite's smoke path: the RS-Net job on timm:resnet10t, started from a plain resnet10t's
    weights, trains with `resolab train` and writes its matrix; a ResNet-50's file is exit 2, one line."""
    monkeypatch.setenv("RESOLAB_HOME", str(tmp_path / "home"))
    path, _ = _plain_file(tmp_path)
    out = tmp_path / "run"
    argv = ["train", str(FINETUNE), "--smoke", "--job", "rsnet-smoke", "--device", "cpu",
            "--set", f"model.init={path}", "--set", "data.synthetic.num_train=32", "--set", "data.synthetic.num_val=16"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    header, *rows = (out / "matrix.csv").read_text().splitlines()
    assert header == "mode,row,test_res,top1,top5"
    fixed = {(row, test) for mode, row, test, *_ in (r.split(",") for r in rows) if mode == "fixed"}
    assert fixed == {(str(r), str(t)) for r in (32, 24, 16) for t in (40, 32, 28, 24, 20, 16)}
    capsys.readouterr()
    misfit, _ = _plain_file(tmp_path, name="torchvision:mnasnet0_5")
    argv[argv.index(f"model.init={path}")] = f"model.init={misfit}"
    assert cli_main([*argv, "--out", str(tmp_path / "misfit")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"model.init={misfit} has no 'conv1.0.weight'" in err[0], err
