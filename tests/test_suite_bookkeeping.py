"""What `resolab run` leaves in MLflow: no empty parent runs, no parent RUNNING forever after a killed
driver, tables logged where the finished jobs are, and job runs that start when the job does."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis.tables.store import log_table, parent_run_id
from analysis.tables.model import Cell, Panel, Table
from jobspec import load_suite
from orchestrator.cluster.mlflow_sink import MlflowSink, SuiteTracking, this_driver
from orchestrator.cluster.status import job_states
from orchestrator.cluster.suite import RunOptions, run_suite
from records.names import CHECKPOINT_DIR as CHECKPOINT_DIR_TAG, DRIVER as DRIVER_TAG, DRIVER_HEARTBEAT as HEARTBEAT_TAG
from records.runs import DRIVER_GONE_AFTER_S

JOB = {"model": {"backbone": "resnet_tiny", "small_input": True, "width": 8}, "method": {"name": "rsnet"},
       "data": {"resolutions": [24, 16], "loader_workers": 0,
                "synthetic": {"num_train": 48, "num_val": 16, "min_size": 24, "max_size": 32}},
       "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2, "lr": 0.05},
       "eval": {"batch_size": 16, "max_batches": 1, "calib_batches": 1, "test_resolutions": [24, 20, 16]},
       "resources": {"workers": 1, "cpus_per_worker": 1.0, "max_failures": 0}}


def write_suite(directory, name: str, lrs=(0.05, 0.02)):
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "job": JOB, "grid": {"train.lr": list(lrs)}}))
    return load_suite(path)


@pytest.fixture
def store(empty_db, tmp_path, monkeypatch):
    monkeypatch.setenv("RESOLAB_HOME", str(tmp_path / "home"))
    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(uri)


def parents(client, suite) -> list:
    experiment = client.get_experiment_by_name(suite.name)
    return client.search_runs([experiment.experiment_id], "tags.`resolab.kind` = 'suite'",
                              order_by=["attributes.start_time ASC"])


def invocation(uri, suite, finish=(), fail=()) -> SuiteTracking:
    """One suite invocation without Ray: the named jobs finish (or fail), the others stay as they are."""
    tracking = SuiteTracking(uri, suite, "resolab run")
    _, _, run_ids = tracking.prepare(suite.jobs)
    for name in finish:
        tracking.client.set_terminated(run_ids[name], status="FINISHED")
    for name in fail:
        tracking.client.set_terminated(run_ids[name], status="FAILED")
    return tracking


def test_a_rerun_with_every_job_finished_adds_no_parent_run(store, tmp_path):
    import ray

    uri, client = store
    suite = write_suite(tmp_path, "noop")
    invocation(uri, suite, finish=[j.name for j in suite.jobs]).finish_suite(failed=False)
    (first,) = parents(client, suite)
    for _ in range(2):
        outcome = run_suite(suite, RunOptions(tracking_uri=uri))
        assert outcome.skipped == [j.name for j in suite.jobs] and outcome.failed == {}
    assert [r.info.run_id for r in parents(client, suite)] == [first.info.run_id]
    assert not ray.is_initialized()


def test_parent_runs_of_dead_drivers_are_ended_as_killed(store, tmp_path):
    uri, client = store
    suite = write_suite(tmp_path, "killed")
    silent = invocation(uri, suite, finish=[suite.jobs[0].name])  # killed long ago: no heartbeat since
    just_killed = SuiteTracking(uri, suite, "resolab run")  # killed a moment ago: its process is gone
    alive = SuiteTracking(uri, suite, "resolab run")  # another driver running now (this process)
    for tracking in (silent, just_killed, alive):
        assert client.get_run(tracking.parent_id).info.status == "RUNNING"
    exited = subprocess.run([sys.executable, "-c", "from orchestrator.cluster.mlflow_sink import this_driver; "
                             "print(this_driver())"], capture_output=True, text=True, check=True).stdout.strip()
    client.set_tag(silent.parent_id, HEARTBEAT_TAG, str(time.time() - DRIVER_GONE_AFTER_S - 60))
    client.set_tag(just_killed.parent_id, DRIVER_TAG, exited)
    assert client.get_run(alive.parent_id).data.tags[DRIVER_TAG] == this_driver()

    # The rerun: every job ends finished (here without Ray, as if trained).
    rerun = invocation(uri, suite, finish=[suite.jobs[1].name])
    rerun.finish_suite(failed=False)
    assert set(rerun.ended_parents) == {silent.parent_id, just_killed.parent_id}
    assert "silent for" in rerun.ended_parents[silent.parent_id]
    assert "no longer running" in rerun.ended_parents[just_killed.parent_id]
    status = {r.info.run_id: r.info.status for r in parents(client, suite)}
    assert status == {silent.parent_id: "KILLED", just_killed.parent_id: "KILLED", alive.parent_id: "RUNNING",
                      rerun.parent_id: "FINISHED"}
    ended = client.get_run(silent.parent_id)  # ended at its last sign of life, not at the rerun
    assert ended.info.end_time == int(float(ended.data.tags[HEARTBEAT_TAG]) * 1000)
    assert "ended by a later `resolab run`" in ended.data.tags["resolab.error"]
    assert {s for s, _ in job_states(suite, uri).values()} == {"done"}


def test_an_interrupted_job_reads_as_interrupted_after_its_parent_is_ended(store, tmp_path):
    uri, client = store
    suite = write_suite(tmp_path, "interrupted", lrs=(0.05,))
    old = SuiteTracking(uri, suite, "resolab run")
    _, _, run_ids = old.prepare(suite.jobs)
    client.update_run(run_ids[suite.jobs[0].name], status="RUNNING")
    client.set_tag(old.parent_id, HEARTBEAT_TAG, str(time.time() - DRIVER_GONE_AFTER_S - 60))
    evaluating = SuiteTracking(uri, suite, "resolab evaluate")  # ends the old parent, resumes nothing
    assert list(evaluating.ended_parents) == [old.parent_id]
    state, detail = job_states(suite, uri)[suite.jobs[0].name]
    assert (state, detail.split(";")[0]) == ("interrupted", "its suite run ended KILLED")


def test_a_job_run_is_made_when_its_trial_starts(store, tmp_path):
    uri, client = store
    suite = write_suite(tmp_path, "queued")
    tracking = SuiteTracking(uri, suite, "resolab run")
    _, _, run_ids = tracking.prepare(suite.jobs)
    assert sorted(run_ids) == sorted(j.name for j in suite.jobs) and tracking.job_runs() == []
    assert {s for s, _ in job_states(suite, uri).values()} == {"pending"}
    first, second = (j.name for j in suite.jobs)
    run_ids.set_tags(second, {CHECKPOINT_DIR_TAG: "/ckpt/second"})
    sink = MlflowSink(client, run_ids, tracking.parent_id)
    sink.on_trial_start(0, [], SimpleNamespace(config={"job": first}))
    time.sleep(1.0)  # the second job waits for a free slot
    queued_until = int(time.time() * 1000)
    sink.on_trial_start(0, [], SimpleNamespace(config={"job": second}))
    run = client.get_run(run_ids[second])
    assert run.info.status == "RUNNING" and run.info.start_time >= queued_until
    assert client.get_run(tracking.parent_id).info.start_time < queued_until - 900
    assert run.data.tags[CHECKPOINT_DIR_TAG] == "/ckpt/second"
    assert run.data.tags["mlflow.parentRunId"] == tracking.parent_id and run.data.params["train.lr"] == "0.02"
    assert job_states(suite, uri)[second][0] == "running"


def test_tables_go_to_the_newest_parent_run_holding_finished_jobs(store, tmp_path):
    uri, client = store
    suite = write_suite(tmp_path, "tabled", lrs=(0.05, 0.02, 0.01))
    done = invocation(uri, suite, finish=[suite.jobs[0].name], fail=[suite.jobs[1].name])
    done.finish_suite(failed=True)  # failed, but one of its jobs finished
    failed = invocation(uri, suite, fail=[suite.jobs[1].name])
    failed.finish_suite(failed=True)  # newer, nothing finished
    assert parents(client, suite)[-1].info.run_id == failed.parent_id
    table = Table("t", "T", panels=[Panel("p", ["row", "top-1"], [[Cell("a"), Cell("1.0")]])])
    assert log_table(client, suite.name, table) == done.parent_id
    assert "tables/t.md" in {f.path for f in client.list_artifacts(done.parent_id, "tables")}
    assert client.list_artifacts(failed.parent_id) == []

    later = invocation(uri, suite, finish=[suite.jobs[1].name])  # resumed and finished the failed job
    later.finish_suite(failed=True)
    assert parent_run_id(client, suite.name) == later.parent_id


def test_queued_job_runs_start_when_the_job_starts_on_ray(local_ray, home, tmp_path):
    """Three 1-CPU jobs on 2 CPUs: the third waits for a slot (whether or not the first two overlap: on a
    loaded machine a tiny job can end before the next trial's process is up), and its run starts when it
    leaves the queue."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = write_suite(tmp_path, "on_ray", lrs=(0.05, 0.02, 0.01))
    outcome = run_suite(suite, RunOptions(tracking_uri=uri, live_interval=60))
    assert outcome.failed == {} and len(outcome.finished) == 3
    client = MlflowClient(uri)
    (parent,) = parents(client, suite)
    runs = sorted((client.get_run(r.info.run_id) for r in SuiteTracking(uri, suite, "x").job_runs()),
                  key=lambda r: r.info.start_time)
    first_end = min(r.info.end_time for r in runs[:2])
    assert runs[2].info.start_time >= first_end - 1000, "the queued job's run counts its time in the queue"
    assert first_end - parent.info.start_time > 3000  # a real wait (Ray's start at least): the check means something

    again = run_suite(suite, RunOptions(tracking_uri=uri, live_interval=60))
    assert len(again.skipped) == 3 and len(parents(client, suite)) == 1


def test_an_interrupt_ends_the_invocations_unfinished_runs_as_killed_and_goes_on(store, tmp_path):
    import signal

    uri, client = store
    suite = write_suite(tmp_path, "stopped", lrs=(0.05, 0.02, 0.01))
    first, second, third = (j.name for j in suite.jobs)
    earlier = SuiteTracking(uri, suite, "resolab run")  # another invocation, still running
    _, _, earlier_runs = earlier.prepare(suite.jobs)
    client.set_terminated(earlier_runs[first], status="FINISHED")
    assert earlier_runs[second]  # its run is made: SCHEDULED
    tracking = SuiteTracking(uri, suite, "resolab run")
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with tracking.killed_on_interrupt():
            _, _, run_ids = tracking.prepare(suite.jobs)  # the second job's run: re-parented, SCHEDULED
            client.update_run(run_ids[third], status="RUNNING")  # the third's: made when it starts
            raise KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is handler
    status = {r.data.tags["resolab.job"]: r.info.status for r in tracking.job_runs()}
    assert status == {first: "FINISHED", second: "KILLED", third: "KILLED"}
    assert client.get_run(tracking.parent_id).info.status == "KILLED"
    assert client.get_run(earlier.parent_id).info.status == "RUNNING"  # another invocation's: not this one's to end
    assert {s for s, _ in job_states(suite, uri).values()} == {"done", "interrupted"}
