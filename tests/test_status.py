"""`resolab status`: each job's state from MLflow, its checkpoint, and whether its driver still runs."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from jobspec import load_suite
from orchestrator.engine import checkpoint as ckpt
from orchestrator.cluster.mlflow_sink import SuiteTracking
from orchestrator.cluster.status import job_states, suite_status
from records.layout import job_dir
from records.runs import DRIVER_GONE_AFTER_S

JOB = {"model": {"backbone": "resnet_tiny", "small_input": True, "width": 8}, "method": {"name": "parallel"},
       "data": {"resolutions": [24, 16]}, "train": {"epochs": 3}}


@pytest.fixture
def suite_and_uri(empty_db, tmp_path):
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    path = tmp_path / "states.yaml"
    path.write_text(yaml.safe_dump({"name": "states", "job": JOB, "grid": {"train.lr": [0.1, 0.2, 0.3, 0.4, 0.5]}}))
    return load_suite(path), f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_states_counts_checkpoint_and_a_silent_driver(suite_and_uri, tmp_path):
    suite, uri = suite_and_uri
    tracking = SuiteTracking(uri, suite, "resolab run states.yaml")
    _, _, run_ids = tracking.prepare(suite.jobs)
    client = MlflowClient(uri)
    finished, running, failed, pending, resumed = (run_ids[j.name] for j in suite.jobs)
    client.set_terminated(finished, status="FINISHED")
    client.update_run(running, status="RUNNING")
    client.update_run(resumed, status="RUNNING")
    client.set_tag(failed, "resolab.error", "TrainingDiverged: loss is nan at epoch 0 step 1")
    client.set_terminated(failed, status="FAILED")
    storage = tmp_path / "ray"
    last = suite.jobs[4]
    ckpt.save(Path(job_dir(str(storage), "states", last.name, last.hash)), {"epoch": 1})

    text = suite_status(suite, uri, str(storage))
    head, *lines = text.splitlines()
    assert head == "states: done 1/5  running 2  interrupted 0  failed 1  pending 1"
    assert lines[0].split()[:2] == ["done", suite.jobs[0].name]
    assert lines[2].split()[:2] == ["failed", suite.jobs[2].name] and "loss is nan" in lines[2]
    assert lines[3].split()[:2] == ["pending", suite.jobs[3].name]
    assert lines[4].split()[:2] == ["running", last.name] and "checkpoint after epoch 2/3" in lines[4]

    # The driver was killed: no heartbeat since. Later its jobs read as interrupted, not running.
    later = time.time() + DRIVER_GONE_AFTER_S + 300
    states = job_states(suite, uri, now=later)
    assert [states[j.name][0] for j in suite.jobs] == ["done", "interrupted", "failed", "interrupted", "interrupted"]
    assert "silent for 7 min" in states[suite.jobs[1].name][1] and "resolab run" in states[suite.jobs[1].name][1]

    # Running the suite again re-parents every unfinished run (the failed one too: it is retried)
    # under a live driver.
    SuiteTracking(uri, suite, "resolab run states.yaml").prepare(suite.jobs)
    states = job_states(suite, uri)
    assert [states[j.name][0] for j in suite.jobs] == ["done", "pending", "pending", "pending", "pending"]


def test_a_driver_that_ended_its_suite_run_leaves_no_job_running(suite_and_uri):
    suite, uri = suite_and_uri
    tracking = SuiteTracking(uri, suite, "resolab run states.yaml")
    _, _, run_ids = tracking.prepare(suite.jobs)
    MlflowClient(uri).update_run(run_ids[suite.jobs[0].name], status="RUNNING")
    tracking.finish_suite(failed=True)
    state, detail = job_states(suite, uri)[suite.jobs[0].name]
    assert (state, detail.split(";")[0]) == ("interrupted", "its suite run ended FAILED")


def test_status_prints_the_run_id_that_export_and_pick_take(suite_and_uri, tmp_path, capsys):
    from orchestrator.cli.main import main

    suite, uri = suite_and_uri
    tracking = SuiteTracking(uri, suite, "resolab run states.yaml")
    _, _, run_ids = tracking.prepare(suite.jobs[:3])  # the last two jobs have no run yet
    client = MlflowClient(uri)
    done, killed, failed = (run_ids[j.name] for j in suite.jobs[:3])
    client.set_terminated(done, status="FINISHED")
    client.update_run(killed, status="RUNNING")
    client.set_terminated(failed, status="FAILED")
    # A Ctrl-C ends the invocation's unfinished runs as KILLED: an interrupt, not a failure.
    tracking.end_interrupted()
    assert client.get_run(killed).info.status == "KILLED" and client.get_run(tracking.parent_id).info.status == "KILLED"

    assert main(["status", str(suite.path), "--tracking-uri", uri, "--storage", str(tmp_path / "ray")]) == 0
    head, *lines = capsys.readouterr().out.splitlines()
    assert head == "states: done 1/5  running 0  interrupted 1  failed 1  pending 2"
    width = max(len(j.name) for j in suite.jobs)
    names = [j.name.ljust(width) for j in suite.jobs]
    assert lines[0] == f"  done        {names[0]}  run {done}"
    assert lines[1] == (f"  interrupted {names[1]}  run {killed}  "
                        "(interrupted (Ctrl-C / SIGINT); run the same command again to resume)")
    assert lines[2].startswith(f"  failed      {names[2]}  run {failed}")
    assert lines[3] == f"  pending     {names[3]}  no run yet"
    assert lines[4] == f"  pending     {names[4]}  no run yet"
