"""A wrong data.root fails in the driver before anything starts: no Ray, no MLflow runs, one clear message."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

from jobspec import load_suite
from orchestrator.data import loaders as data_module
from orchestrator.cli.main import main as cli_main
from orchestrator.data.loaders import DatasetError, check_suite_data

JOB = {"model": {"backbone": "resnet_tiny", "small_input": True, "width": 8}, "method": {"name": "rsnet"},
       "data": {"dataset": "imagefolder", "resolutions": [24, 16]}, "train": {"epochs": 1}}


def write_suite(directory: Path, root: Path | None, name: str = "imagenet_like", **data) -> Path:
    job = yaml.safe_load(yaml.safe_dump(JOB))
    job["data"].update(data)
    if root is not None:
        job["data"]["root"] = str(root)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "job": job, "grid": {"method.name": ["individual", "rsnet", "san"]}}))
    return path


def image_folder(root: Path, classes=("cat", "dog"), splits=("train", "val")) -> Path:
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(root / split / name / "0.png")
    return root


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RESOLAB_HOME", str(home))
    return home


@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_missing_root_fails_in_seconds_without_ray_and_records_nothing(command, tmp_path, isolated_home, capsys):
    import ray

    missing = tmp_path / "no-such-imagenet"
    path = write_suite(tmp_path, missing)
    db = tmp_path / "mlflow.db"
    started = time.monotonic()
    assert cli_main([command, str(path), "--tracking-uri", f"sqlite:///{db}"]) == 2
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert elapsed < 10, elapsed
    assert err.count("resolab: ") == 1  # one message, not one per job
    assert f"dataset root not found: {missing}" in err and "Fix: set data.root" in err
    assert not ray.is_initialized()
    assert not (isolated_home / "ray").exists()
    if db.exists():  # the store may exist; the suite's experiment and runs may not
        client = MlflowClient(f"sqlite:///{db}")
        assert client.get_experiment_by_name("imagenet_like") is None
        assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_dry_run_reports_a_missing_root_and_passes_a_good_one(tmp_path, capsys):
    missing = tmp_path / "no-such-imagenet"
    assert cli_main(["run", str(write_suite(tmp_path, missing)), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "rsnet" in out  # the job table is still shown
    assert f"dataset root not found: {missing}" in err and "data.dataset=synthetic" in err

    good = image_folder(tmp_path / "good")
    assert cli_main(["run", str(write_suite(tmp_path, good, name="good")), "--dry-run"]) == 0
    assert f"data {good}: train/ and val/ hold the same 2 classes" in capsys.readouterr().out


@pytest.mark.parametrize("breakage, message", [
    ("no_val", "missing split folder"),
    ("empty_class", "holds no image file"),
    ("other_classes", "hold different classes"),
    ("num_classes", "data.num_classes=5 but"),
])
def test_broken_layouts_are_named(tmp_path, breakage, message):
    root = image_folder(tmp_path / "root", splits=("train",) if breakage == "no_val" else ("train", "val"))
    if breakage == "empty_class":
        (root / "val" / "dog" / "0.png").unlink()
    if breakage == "other_classes":
        image_folder(root, classes=("bird",), splits=("val",))
    extra = {"num_classes": 5} if breakage == "num_classes" else {}
    suite = load_suite(write_suite(tmp_path, root, **extra))
    with pytest.raises(DatasetError, match=message) as caught:
        check_suite_data(suite.jobs)
    assert str(root) in str(caught.value)


def test_each_root_is_checked_once_and_synthetic_data_not_at_all(tmp_path, monkeypatch):
    calls = []
    original = data_module.check_imagefolder_layout
    monkeypatch.setattr(data_module, "check_imagefolder_layout", lambda root: calls.append(root) or original(root))
    root = image_folder(tmp_path / "root")
    nested = tmp_path / "nested"  # ImageFolder finds images in subfolders of a class folder too
    for split in ("train", "val"):
        (nested / split / "cat" / "batch1").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(nested / split / "cat" / "batch1" / "0.png")
    suite = load_suite(write_suite(tmp_path, root))
    assert len(suite.jobs) >= 3
    other = load_suite(write_suite(tmp_path, nested, name="nested"))
    assert check_suite_data(suite.jobs + other.jobs) == {root: ["cat", "dog"], nested: ["cat"]}
    assert calls == [root, nested]

    synthetic = load_suite(write_suite(tmp_path, tmp_path / "not-written-yet", name="synth", dataset="synthetic"))
    assert check_suite_data(synthetic.jobs) == {}
    assert not (tmp_path / "not-written-yet").exists()
