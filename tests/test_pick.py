"""pick: the most accurate route within the budget (fixed timing table, real choice logic); run ids from a
real MLflow store (SQLite in tmp): finished, unfinished and unknown; evaluate-model records a run that
export and pick then read."""
from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from analysis.matrix import Matrix
from analysis.report import log_matrix
from orchestrator.engine import checkpoint as ckpt
from orchestrator.cli.main import main as cli_main
from orchestrator.deploy.model_file import build_model, save_model_file
from orchestrator.deploy.pick import pick, render
from records.names import CHECKPOINT_DIR as CHECKPOINT_DIR_TAG

RES = [32, 24, 16]
# (mode, row, test_res, top1): row 0 = an adaptive route.
CELLS = [("fixed", 32, 32, 70.0), ("fixed", 24, 32, 60.0), ("fixed", 16, 32, 40.0),
         ("fixed", 32, 28, 64.0), ("fixed", 24, 28, 66.0), ("fixed", 16, 28, 50.0),
         ("fixed", 32, 24, 55.0), ("fixed", 24, 24, 62.0), ("fixed", 16, 24, 52.0),
         ("fixed", 32, 16, 30.0), ("fixed", 24, 16, 45.0), ("fixed", 16, 16, 50.0),
         ("interp", 0, 28, 67.0), ("nearest", 0, 28, 64.0),
         ("interp", 0, 40, 71.0)]
FAKE_MS = {40: 9.0, 32: 6.0, 28: 4.5, 24: 3.0, 16: 3.5}  # 16 px slower than 24: not on the frontier


def matrix() -> Matrix:
    frame = pd.DataFrame([(m, r, t, a, a + 20) for m, r, t, a in CELLS], columns=["mode", "row", "test_res", "top1", "top5"])
    return Matrix(frame)


@pytest.fixture(scope="module")
def net():
    from jobspec import JobConfig
    cfg = JobConfig.parse({"model": {"backbone": "resnet_tiny", "small_input": True, "width": 4},
                           "method": {"name": "rsnet"}, "data": {"resolutions": RES, "num_classes": 10}})
    return build_model(cfg, 10)[1].eval()


def fake_timer(model, resolution):
    return FAKE_MS[resolution]


def test_pick_chooses_the_most_accurate_route_within_the_budget(net):
    result = pick(net, matrix(), 5.0, fake_timer)
    c = result.choice
    assert (c.resolution, c.mode, c.row, c.top1) == (28, "interp", 0, 67.0)  # 32 px (70%) takes 6 ms
    assert c.route.bn == "interpolate" and "--bn interpolate" in c.export_options()
    assert [x.resolution for x in result.frontier()] == [24, 28, 32, 40]
    assert next(x for x in result.candidates if x.resolution == 16).frontier is False
    at24 = next(x for x in result.candidates if x.resolution == 24)
    assert (at24.mode, at24.row) == ("fixed", 24) and "--row 24" in at24.export_options()
    assert pick(net, matrix(), 6.0, fake_timer).choice.resolution == 32  # the budget is inclusive
    assert pick(net, matrix(), 100.0, fake_timer).choice.resolution == 40


def test_pick_says_when_nothing_fits(net):
    result = pick(net, matrix(), 2.0, fake_timer)
    assert result.choice is None and result.fastest.resolution == 24
    text = render(result, "RUN")
    assert "nothing fits 2 ms: the fastest route is 24px (fixed, slot 24) at 3.000 ms" in text


# ---------------------------------------------------------------- run ids in a real MLflow store


@pytest.fixture
def store(tmp_path, empty_db, tiny_job):
    """A tracking store holding a finished job run (final checkpoint on disk, matrix logged) and a running one."""
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    cfg = tiny_job(**{"data.resolutions": RES, "model.width": 4})
    method, net = build_model(cfg, 10)
    job_dir = tmp_path / "jobs" / "tiny"
    ckpt.save(job_dir, {"model": net.state_dict(), "epoch": cfg.train.epochs - 1, "config": cfg.to_dict(),
                        "config_hash": "abc", "method": "rsnet"})
    experiment = client.create_experiment("s", artifact_location=(tmp_path / "artifacts").as_uri())
    tags = {"resolab.kind": "job", "resolab.job": "tiny", "resolab.suite": "s", CHECKPOINT_DIR_TAG: str(job_dir)}
    finished = client.create_run(experiment, tags=tags).info.run_id
    log_matrix(client, finished, matrix())
    client.set_terminated(finished, "FINISHED")
    running = client.create_run(experiment, tags=tags).info.run_id
    return uri, finished, running, cfg, net


def test_export_and_pick_from_a_finished_run(store, tmp_path, capsys):
    uri, finished, _, _, _ = store
    out = tmp_path / "all"
    assert cli_main(["export", finished, "--all", "--out", str(out), "--tracking-uri", uri]) == 0
    index = json.loads((out / "index.json").read_text())
    assert [(e["resolution"], e["expected_top1"]) for e in index["routes"]] == [(32, 70.0), (24, 62.0), (16, 50.0)]
    capsys.readouterr()
    code = cli_main(["pick", finished, "--budget-ms", "10000", "--threads", "1", "--json", "--tracking-uri", uri])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["choice"]["resolution"] == 40  # every route fits: the most accurate one
    assert {c["resolution"] for c in data["candidates"]} == {40, 32, 28, 24, 16}
    assert all(c["latency_ms"] > 0 and c["madds"] > 0 for c in data["candidates"])


def test_run_ids_that_cannot_be_used(store, tmp_path, capsys):
    uri, _, running, _, _ = store
    out = tmp_path / "x.pt"
    assert cli_main(["export", running, "--resolution", "24", "--out", str(out), "--tracking-uri", uri]) == 2
    assert "not FINISHED" in capsys.readouterr().err
    assert cli_main(["export", "0" * 32, "--resolution", "24", "--out", str(out), "--tracking-uri", uri]) == 2
    assert "no MLflow run" in capsys.readouterr().err
    assert cli_main(["pick", running, "--budget-ms", "5", "--tracking-uri", uri]) == 2
    assert "not FINISHED" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".x.pt*"))


def test_evaluate_model_records_a_run_that_pick_reads(store, tmp_path, capsys):
    uri, _, _, cfg, net = store
    model = save_model_file(tmp_path / "m.pt", cfg, net, 10, {"kind": "test"})
    assert cli_main(["evaluate-model", str(model), "--set", "eval.test_resolutions=[32,24]",
                     "--tracking-uri", uri, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    # Said at once: which data (the model's own synthetic data: no --data needed) and what is evaluated;
    # then the images done (eval.max_batches=1 of 8 images caps the 20 validation images at 8).
    assert lines[0] == ("data: the built-in synthetic data the model's config names (10 classes); give --data ROOT "
                        "to evaluate on an ImageFolder instead")
    # fixed: 3 training rows x 2 test resolutions; nearest and interp: one adaptive row each
    assert lines[1] == "evaluating 10 cells (fixed, nearest, interp) at test resolutions 32 24 on cpu"
    assert re.fullmatch(r"  8/8 images, \d+ s", lines[2]) and lines[3].startswith("evaluated in ")
    run_id = printed.split("recorded as MLflow run ")[1].split()[0]
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resolab.model_file"] == str(model.resolve())
    assert "acc1/train32_test24" in run.data.metrics and "acc1/interp/test24" in run.data.metrics
    assert cli_main(["pick", run_id, "--budget-ms", "0.001", "--tracking-uri", uri]) == 1
    assert "nothing fits" in capsys.readouterr().out


def test_pick_refuses_a_device_it_cannot_time_on_before_loading_anything(store, capsys):
    uri, finished, _, _, _ = store
    for device, said in [("tpu", "--device 'tpu' is not one resolab runs on; use cpu or cuda (cuda:N for GPU N)"),
                         ("cuda:x", "--device 'cuda:x' is not a torch device; use cpu or cuda (cuda:N for GPU N)")]:
        code = cli_main(["pick", finished, "--budget-ms", "5", "--device", device, "--tracking-uri", uri])
        err = capsys.readouterr().err
        assert code == 2 and err == f"resolab: {said}\n"


def test_evaluate_model_progress_counts_the_images_the_evaluator_takes():
    from torch.utils.data import DataLoader, TensorDataset

    from orchestrator.deploy.evaluate_model import progress

    loader = DataLoader(TensorDataset(torch.zeros(10, 1), torch.zeros(10)), batch_size=4)
    lines: list[str] = []
    batches = list(progress(lines.append, interval=0.0)(loader))
    assert [len(b[1]) for b in batches] == [4, 4, 2]  # every batch passed on, unchanged
    assert [line.split(",")[0] for line in lines] == ["  4/10 images (40%)", "  8/10 images (80%)", "  10/10 images"]
    lines.clear()
    wrapped = progress(lines.append, max_batches=1, interval=0.0)(loader)
    next(wrapped)
    next(wrapped)  # the evaluator asks for the next batch, then stops there (eval.max_batches=1)
    assert lines[0].startswith("  4/4 images, ")
