"""A finished model is evaluated again, not trained again, when a job changes only its eval settings."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from analysis.matrix import evaluate_matrix
from analysis.report import read_matrix
from jobspec import flatten, load_suite, param_value
from jobspec.hashing import training_hash, training_hash_of_params
from methods import build_method
from orchestrator.engine import checkpoint as ckpt
from orchestrator.cli.main import main as cli_main
from orchestrator.data.loaders import build_loader, build_val_dataset
from orchestrator.engine.loop import LocalRuntime, train
from orchestrator.cluster.status import job_states, suite_status
from orchestrator.cluster.suite import RunOptions, run_suite
from records.layout import job_dir
from records.names import (CHECKPOINT_DIR as CHECKPOINT_DIR_TAG, EVALUATED_FROM as EVALUATED_FROM_TAG,
                           SOURCE_CODE_VERSION as SOURCE_CODE_TAG, TRAINING_HASH as TRAINING_HASH_TAG)

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 6
# Enough epochs that training visibly costs more than the one matrix an evaluation computes.
TINY_JOB = {
    "model": {"backbone": "resnet_tiny", "small_input": True, "width": 8},
    "method": {"name": "rsnet"},
    "data": {"resolutions": [24, 16], "loader_workers": 0,
             "synthetic": {"num_train": 64, "num_val": 16, "min_size": 24, "max_size": 32}},
    "train": {"epochs": EPOCHS, "batch_size": 8, "max_steps_per_epoch": 4, "lr": 0.05},
    "eval": {"batch_size": 16, "max_batches": 1, "calib_batches": 1, "test_resolutions": [24, 20, 16]},
    "resources": {"workers": 1, "cpus_per_worker": 0.5, "max_failures": 1},
}


def write_suite(directory: Path, name: str, test_resolutions=(24, 20, 16), lrs=(0.05,)) -> Path:
    job = yaml.safe_load(yaml.safe_dump(TINY_JOB))
    job["eval"]["test_resolutions"] = list(test_resolutions)
    suite = {"name": name, "job": job}
    if len(lrs) > 1:
        suite["grid"] = {"train.lr": list(lrs)}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def job_run(client: MlflowClient, suite: str, job_name: str):
    experiment = client.get_experiment_by_name(suite)
    runs = client.search_runs([experiment.experiment_id], "tags.`resolab.kind` = 'job'") if experiment else []
    return next((r for r in runs if r.data.tags["resolab.job"] == job_name), None)


# ---------------------------------------------------------------- the training hash (no Ray)


def test_training_hash_ignores_only_the_eval_settings(tiny_job):
    base = tiny_job()
    evaluated_otherwise = tiny_job(**{"eval.test_resolutions": [40, 12], "eval.max_batches": 3,
                                      "eval.calibrate": False})
    trained_otherwise = tiny_job(**{"train.lr": 0.02})
    assert training_hash(base) == training_hash(evaluated_otherwise) != training_hash(trained_otherwise)
    params = {k: param_value(v) for k, v in flatten(base).items()}  # what an older run's params hold
    assert training_hash_of_params(params) == training_hash(base) == training_hash(base.to_dict())


def test_eval_settings_do_not_change_the_trained_weights(tiny_job, tmp_path):
    """What makes the training hash sound: per-epoch validation reads eval.* but never the weights."""
    weights = []
    for overrides in ({}, {"eval.batch_size": 3, "eval.max_batches": 2, "eval.test_resolutions": [20, 12]}):
        cfg = tiny_job(**{"train.epochs": 2, **overrides})
        trained = train(cfg, LocalRuntime(device="cpu", log=lambda msg: None), "test")
        weights.append(trained.net.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_retargeted_suites_use_the_table_1_and_2_models():
    """SAN Table 6's I-224/I-192, SAN Table 7 and RS-Nets Fig. 4 evaluate the models the papers reused."""
    for smoke in (False, True):
        def models(name):
            return {j.name: training_hash(j.config) for j in load_suite(REPO / "experiments" / f"{name}.yaml",
                                                                         smoke=smoke).jobs}
        table1, table2 = models("san_table1"), models("rsnets_table2")
        san6, san7, fig4 = models("san_table6"), models("san_table7"), models("rsnets_fig4")
        res = (32, 24) if smoke else (224, 192)
        backbone = "smoke" if smoke else "resnet18"
        for r in res:
            assert san6[f"individual-{backbone}-res={r}"] == table1[f"individual-{backbone}-r18-res={r}"]
        (san7_model,) = san7.values()
        assert san7_model == table1["san-smoke-r18" if smoke else "san-resnet50-r50"]  # smoke merges r18 and r50
        dense = {k: v for k, v in fig4.items() if "dense" in k}
        assert dense and all(v in table2.values() for v in dense.values())
        assert fig4[f"rsnet-{backbone}-dense_rsnet"] == table2[f"rsnet-{backbone}-r18"]


# ---------------------------------------------------------------- on a real local Ray, real SQLite MLflow


@pytest.fixture(scope="module")
def trained(local_ray, home, empty_db, tmp_path_factory):
    """One suite trained to the end: (directory, tracking URI, storage, suite, outcome)."""
    directory = tmp_path_factory.mktemp("evaluate_only")
    shutil.copy(empty_db, directory / "mlflow.db")
    uri, storage = f"sqlite:///{directory / 'mlflow.db'}", str(directory / "ray")
    suite = load_suite(write_suite(directory, "trained"))
    outcome = run_suite(suite, RunOptions(tracking_uri=uri, storage=storage, live_interval=60))
    assert outcome.finished == [suite.jobs[0].name] and outcome.failed == {}
    return directory, uri, storage, suite, outcome


def test_new_test_resolution_is_evaluated_from_the_finished_model_without_training(trained):
    directory, uri, storage, source_suite, training = trained
    client = MlflowClient(uri)
    (source_job,) = source_suite.jobs
    source = job_run(client, "trained", source_job.name)
    source_dir = Path(job_dir(storage, "trained", source_job.name, source_job.hash))
    assert ckpt.final_checkpoint(source_dir) is not None  # kept after the job finished
    # Ray's own copies: only the latest per trial, not one per epoch.
    assert len(list(Path(storage).glob("trained-*/*/checkpoint_*"))) == 1

    suite = load_suite(write_suite(directory, "reevaluated", test_resolutions=(24, 20, 16, 12)))
    (job,) = suite.jobs
    assert job.hash != source_job.hash and training_hash(job.config) == training_hash(source_job.config)
    outcome = run_suite(suite, RunOptions(tracking_uri=uri, storage=storage, live_interval=60))
    assert outcome.evaluated == [job.name] and outcome.failed == {}
    # Training = 6 epochs + the matrix; the evaluation only the matrix (one more column), in the same trial path.
    assert outcome.trial_s < training.trial_s, (outcome.trial_s, training.trial_s)

    run = job_run(client, "reevaluated", job.name)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags[EVALUATED_FROM_TAG] == source.info.run_id
    assert tags[SOURCE_CODE_TAG] == source.data.tags["resolab.code_version"]
    assert tags[TRAINING_HASH_TAG] == source.data.tags[TRAINING_HASH_TAG]
    assert "Evaluation only" in tags["mlflow.note.content"]
    # No step trained: resumed at the last epoch, and every per-epoch curve is the source's, copied as is.
    assert run.data.metrics["resumed_at_epoch"] == EPOCHS
    for key in ("loss/total", "lr", "acc1/r24", "start_epoch", "epoch_time_s"):
        copied = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert copied == [(m.step, m.value) for m in client.get_metric_history(source.info.run_id, key)]
        assert [step for step, _ in copied] == list(range(EPOCHS))

    # The new column equals a direct evaluation of the loaded checkpoint; the old columns equal the source's.
    cfg = job.config
    method = build_method(cfg.method, cfg.model, cfg.data.resolutions)
    net = method.build(int(run.data.metrics["num_classes"]))
    net.load_state_dict(torch.load(source_dir / ckpt.CHECKPOINT_FILE, weights_only=True)["model"])
    loader = build_loader(build_val_dataset(cfg.data, cfg.test_resolutions()), cfg.eval.batch_size, shuffle=False,
                          seed=0, workers=0, drop_last=False)
    direct = evaluate_matrix(net, method.eval_modes(cfg.eval.calibrate), loader, cfg.test_resolutions(),
                             torch.device("cpu"), max_batches=cfg.eval.max_batches).frame

    def cells(frame, keep):
        return (frame[keep(frame.test_res)].sort_values(["mode", "row", "test_res"]).reset_index(drop=True)
                [["mode", "row", "test_res", "top1", "top5"]])

    logged = read_matrix(client, run.info.run_id).frame
    new_column = cells(logged, lambda t: t == 12)
    assert len(new_column) > 0
    pd.testing.assert_frame_equal(new_column, cells(direct, lambda t: t == 12), check_dtype=False)
    pd.testing.assert_frame_equal(cells(logged, lambda t: t != 12),
                                  cells(read_matrix(client, source.info.run_id).frame, lambda t: t > 0),
                                  check_dtype=False)

    # Nothing relabelled: the job's folder holds its result files and no checkpoint; its run names the
    # source's checkpoint directory, where its model is.
    own = Path(job_dir(storage, "reevaluated", job.name, job.hash))
    assert not (own / ckpt.CHECKPOINT_FILE).exists() and (own / "result.json").is_file()
    assert tags[CHECKPOINT_DIR_TAG] == str(source_dir.resolve())

    state, detail = job_states(suite, uri)[job.name]
    assert state == "done" and source.info.run_id in detail
    assert run_suite(suite, RunOptions(tracking_uri=uri, storage=storage)).skipped == [job.name]  # not again


def test_evaluate_command_evaluates_what_has_a_model_and_lists_the_rest(trained, capsys):
    directory, uri, storage, source_suite, _ = trained
    client = MlflowClient(uri)
    source = job_run(client, "trained", source_suite.jobs[0].name)
    for key in (TRAINING_HASH_TAG, CHECKPOINT_DIR_TAG):  # as runs recorded before these tags existed
        client.delete_tag(source.info.run_id, key)

    # lr 0.05 has a trained model (evaluated at a new resolution); lr 0.02 was never trained.
    path = write_suite(directory, "evaluate_cmd", test_resolutions=(28, 24, 16), lrs=(0.05, 0.02))
    suite = load_suite(path)
    with_model, without = suite.jobs
    assert "resolab evaluate" in suite_status(suite, uri, storage).splitlines()[1 + suite.jobs.index(with_model)]
    capsys.readouterr()
    assert cli_main(["evaluate", str(path), "--tracking-uri", uri, "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "evaluated 1," in out and f"NO MODEL {without.name}: no FINISHED run trains its model" in out
    run = job_run(client, "evaluate_cmd", with_model.name)
    assert run.info.status == "FINISHED" and run.data.tags[EVALUATED_FROM_TAG] == source.info.run_id
    assert "acc1/train24_test28" in run.data.metrics
    assert job_run(client, "evaluate_cmd", without.name) is None  # a job without a model gets no run

    # With the checkpoints gone (the evaluated jobs' copies too) there is nothing to evaluate: exit code 3,
    # the reason names the run and where it looked, and Ray is not started.
    other = write_suite(directory, "evaluate_elsewhere", test_resolutions=(20,))
    shutil.move(storage, storage + ".away")
    try:
        assert cli_main(["evaluate", str(other), "--tracking-uri", uri, "--storage", storage]) == 3
    finally:
        shutil.move(storage + ".away", storage)
    out = capsys.readouterr().out
    assert f"run {source.info.run_id}" in out and "no final checkpoint is left" in out
    assert MlflowClient(uri).get_experiment_by_name("evaluate_elsewhere") is None  # no run recorded


def test_a_part_trained_run_is_superseded_by_the_evaluation_of_a_finished_model(empty_db, tmp_path):
    """No Ray: the driver's side. An older source run (no training-hash or checkpoint tag, as runs recorded
    before them) and a run of the new job that an earlier invocation trained part-way."""
    from orchestrator.cluster.mlflow_sink import SuiteTracking
    from orchestrator.cluster.plan import Evaluate, plan_jobs, read_snapshot

    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "ray")
    client = MlflowClient(uri)
    source_suite = load_suite(write_suite(tmp_path, "source"))
    (source_job,) = source_suite.jobs
    source_tracking = SuiteTracking(uri, source_suite, "cmd")
    _, _, run_ids = source_tracking.prepare(source_suite.jobs)
    source_id = run_ids[source_job.name]
    client.delete_tag(source_id, TRAINING_HASH_TAG)
    for epoch in range(EPOCHS):
        client.log_metric(source_id, "loss/total", 2.0 - epoch / 10, step=epoch)
    client.log_metric(source_id, "acc1/train24_test24", 50.0)  # the source's matrix: not history
    client.set_terminated(source_id, status="FINISHED")
    net = build_method(source_job.config.method, source_job.config.model, [24, 16]).build(10)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    ckpt.save(Path(job_dir(storage, "source", source_job.name, source_job.hash)), {
        "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": {}, "epoch": EPOCHS - 1,
        "rng": ckpt.rng_state(), "config": source_job.config.to_dict(), "config_hash": source_job.hash,
        "method": "rsnet", "history": []})

    suite = load_suite(write_suite(tmp_path, "target", test_resolutions=(20,)))
    (job,) = suite.jobs
    tracking = SuiteTracking(uri, suite, "cmd")
    _, _, run_ids = tracking.prepare(suite.jobs)
    part_trained = run_ids[job.name]
    client.log_metric(part_trained, "loss/total", 9.0, step=0)

    snapshot, _ = read_snapshot(client, tracking.experiment_id, suite.jobs, "target", storage)
    source_dir = Path(job_dir(storage, "source", source_job.name, source_job.hash))
    (decision,) = plan_jobs(suite.jobs, snapshot)
    assert isinstance(decision, Evaluate) and decision.checkpoint_dir == str(source_dir)
    prepared = tracking.carry_out([decision], snapshot)
    run_ids = prepared.run_ids
    assert list(prepared.evaluations) == [job.name] and run_ids[job.name] != part_trained
    assert client.get_run(part_trained).info.status == "KILLED"
    run = client.get_run(run_ids[job.name])
    assert run.data.tags[EVALUATED_FROM_TAG] == source_id
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss/total")] == \
        [2.0 - e / 10 for e in range(EPOCHS)]
    assert "acc1/train24_test24" not in run.data.metrics
    # Nothing copied or relabelled: the job's own directory holds no checkpoint.
    assert not (Path(job_dir(storage, "target", job.name, job.hash)) / ckpt.CHECKPOINT_FILE).exists()
