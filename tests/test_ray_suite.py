"""Suites on a real local Ray with a real MLflow store: concurrency, failures, restarts, a real MLflow server.
DDP jobs (one rank on each of two nodes) run on the real multi-node cluster of tests/test_multinode.py."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli.main import main as cli_main
from jobspec import load_suite
from records.store import TrackingUnavailable
from orchestrator.cluster.status import job_states
from orchestrator.cluster.suite import RunOptions, run_suite
from records.runs import DRIVER_GONE_AFTER_S

REPO = Path(__file__).resolve().parent.parent

# One tiny job shape for every test here: 16-24 px, a handful of steps, all on 2 CPUs.
TINY_JOB = {
    "model": {"backbone": "resnet_tiny", "small_input": True, "width": 8},
    "method": {"name": "rsnet"},
    "data": {"resolutions": [24, 16], "loader_workers": 0,
             "synthetic": {"num_train": 48, "num_val": 16, "min_size": 24, "max_size": 32}},
    "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2, "lr": 0.05},
    "eval": {"batch_size": 16, "max_batches": 1, "calib_batches": 1, "test_resolutions": [24, 20, 16]},
    "resources": {"workers": 1, "cpus_per_worker": 0.5, "max_failures": 1},
}


def write_suite(directory: Path, name: str, job_overrides: dict | None = None, base: dict = TINY_JOB,
                **sections) -> Path:
    job = yaml.safe_load(yaml.safe_dump(base))
    for dotted, value in (job_overrides or {}).items():
        node = job
        *path, leaf = dotted.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "job": job, **sections}))
    return path


def runs_of(tracking_uri: str, suite: str):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(suite)
    return client, client.search_runs([experiment.experiment_id], "tags.`resolab.kind` = 'job'") if experiment else []


def test_grid_runs_jobs_concurrently_and_a_diverging_job_fails_alone(local_ray, home, tmp_path, empty_db):
    # Jobs of a few seconds, long enough for two to be seen running at once whatever the machine's load.
    longer = {"train.divergence_threshold": 50.0, "train.epochs": 12, "train.max_steps_per_epoch": 6}
    path = write_suite(tmp_path, "grid", grid={"train.lr": [0.05, 0.02, 1.0e9]}, job_overrides=longer)
    shutil.copy(empty_db, tmp_path / "mlflow.db")  # migrated already
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    outcome = run_suite(load_suite(path), RunOptions(tracking_uri=uri, live_interval=60))
    assert outcome.max_running >= 2  # 0.5 CPU per job on 2 CPUs: several at once
    assert len(outcome.finished) == 2
    (failed_name, reason), = outcome.failed.items()
    assert "lr=1" in failed_name or "1e" in failed_name or "1000000000" in failed_name
    assert "TrainingDiverged" in reason and "train.lr" in reason
    client, runs = runs_of(uri, "grid")
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]
    failed_run = next(r for r in runs if r.info.status == "FAILED")
    assert "diverged" in failed_run.data.tags["resolab.error"]

    # Another suite holding one of the finished configs copies its run and starts no trial at all.
    again = run_suite(load_suite(write_suite(tmp_path, "grid_again", {"train.lr": 0.05, **longer})),
                      RunOptions(tracking_uri=uri, live_interval=60))
    assert (len(again.reused), again.finished, again.failed, again.wall_s) == (1, [], {}, 0.0)
    client, (copy,) = runs_of(uri, "grid_again")
    source = client.get_run(copy.data.tags["resolab.reused_from"])
    assert source.data.tags["resolab.suite"] == "grid" and copy.data.metrics == source.data.metrics


def test_unreachable_tracking_server_fails_before_training(home, tmp_path):
    path = write_suite(tmp_path, "offline")
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="cannot reach the MLflow tracking server"):
        run_suite(load_suite(path), RunOptions(tracking_uri="http://127.0.0.1:9"))
    assert time.monotonic() - started < 30
    assert not (home / "ray" / "offline").exists()  # nothing was started


def test_bad_config_is_refused_with_the_key_named(tmp_path, capsys):
    path = write_suite(tmp_path, "typo", {"train.epoch": 3})
    assert cli_main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train.epoch" in err and "train.epochs" in err


def _job_runs_sqlite(db: Path):
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("restart")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`resolab.kind` = 'job'")


@pytest.mark.slow
def test_driver_killed_mid_suite_then_rerun_skips_finished_and_resumes(local_ray, ray_head, tmp_path, capsys,
                                                                       monkeypatch):
    """A real `resolab run` in its own process group, on the session's Ray, SIGKILLed once a job has
    finished; then the same command again (here, in this process)."""
    path = write_suite(tmp_path, "restart", {"train.epochs": 4, "train.max_steps_per_epoch": 3,
                                             "resources.cpus_per_worker": 1.0},
                       grid={"method.name": ["parallel", "rsnet", "san"]})
    env = {**os.environ, "RESOLAB_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    db = tmp_path / "home" / "mlflow.db"
    db.parent.mkdir()
    _job_runs_sqlite(db)  # create the store first, so that polling it never races the driver's creation
    command = [sys.executable, "-m", "orchestrator.cli.main", "run", str(path), "--address", ray_head]
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            runs = _job_runs_sqlite(db) if db.exists() else []
            if any(r.info.status == "FINISHED" for r in runs):
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("no job finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Ray ends the dead driver's trials; once their CPUs are free nothing of it writes any more.
    while local_ray.available_resources().get("CPU", 0) < local_ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, local_ray.available_resources()
        time.sleep(0.2)
    before = {r.info.run_id: r for r in _job_runs_sqlite(db)}
    finished_before = {rid for rid, r in before.items() if r.info.status == "FINISHED"}
    assert 1 <= len(finished_before) < 3
    checkpointed = {p.parent.name.rsplit("-", 1)[1]  # <job>-<hash>/checkpoint.pt of interrupted jobs
                    for p in (tmp_path / "home" / "ray" / "restart" / "jobs").glob("*/checkpoint.pt")}
    # `resolab status`: the killed driver's jobs still look alive at first, then read as interrupted.
    suite = load_suite(path)
    states = job_states(suite, f"sqlite:///{db}")
    assert [s for s, _ in states.values()].count("done") == len(finished_before)
    assert "interrupted" not in {s for s, _ in states.values()}
    later = job_states(suite, f"sqlite:///{db}", now=time.time() + DRIVER_GONE_AFTER_S + 60)
    started = len(before)  # a job gets its run when it starts; one still queued has none and is pending
    assert sorted(s for s, _ in later.values()) == sorted(["done"] * len(finished_before)
                                                         + ["interrupted"] * (started - len(finished_before))
                                                         + ["pending"] * (3 - started))

    monkeypatch.setenv("RESOLAB_HOME", env["RESOLAB_HOME"])
    capsys.readouterr()
    assert cli_main(command[3:]) == 0
    assert f"{len(finished_before)} already finished" in capsys.readouterr().out
    after = {r.info.run_id: r for r in _job_runs_sqlite(db)}
    assert set(before) <= set(after) and len(after) == 3  # no duplicate runs: unfinished ones were reused
    assert all(r.info.status == "FINISHED" for r in after.values())
    client = MlflowClient(f"sqlite:///{db}")
    parents = client.search_runs([next(iter(after.values())).info.experiment_id], "tags.`resolab.kind` = 'suite'")
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"]  # the killed driver's run is ended
    for rid in finished_before:  # finished jobs were not trained again
        assert after[rid].info.end_time == before[rid].info.end_time
    for rid, run in after.items():  # interrupted jobs with a checkpoint resumed from it, not from scratch
        if rid not in finished_before and run.data.tags["resolab.config_hash"] in checkpointed:
            # A job killed during its final matrix has no epochs left; resumed_at_epoch is then 4.
            resumed_at = run.data.metrics["resumed_at_epoch"]
            assert resumed_at >= 1, run.data.metrics
            starts = [m.value for m in client.get_metric_history(rid, "start_epoch")]
            assert resumed_at == 4 or resumed_at in starts, (resumed_at, starts)


@pytest.mark.slow
def test_suite_records_into_a_real_mlflow_server(local_ray, home, tmp_path, mlflow_server):
    url, served = mlflow_server
    path = write_suite(tmp_path, "served", grid={"method.name": ["parallel", "san"]})
    outcome = run_suite(load_suite(path), RunOptions(tracking_uri=url, live_interval=60))
    assert outcome.failed == {} and len(outcome.finished) == 2
    client, runs = runs_of(url, "served")
    assert sorted(r.data.tags["resolab.method"] for r in runs) == ["parallel", "san"]
    assert all(r.info.status == "FINISHED" and "acc1/train24_test20" in r.data.metrics for r in runs)
    # Artifacts went through the server, into its folder for this experiment (the server is the session's).
    assert len(list((Path(served) / runs[0].info.experiment_id).rglob("matrix.parquet"))) == 2


@pytest.mark.slow
def test_quickstart_smoke_runs_for_real_and_make_tables_prints_it(local_ray, home, tmp_path, capsys, empty_db):
    """The README's main job at its smoke setting, end to end: Ray, MLflow, then the tables."""
    from analysis.make_tables import main as make_tables

    shutil.copy(empty_db, tmp_path / "mlflow.db")  # migrated already
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert cli_main(["run", str(REPO / "experiments" / "quickstart.yaml"), "--smoke", "--tracking-uri", uri]) == 0
    client, runs = runs_of(uri, "quickstart")
    suite = load_suite(REPO / "experiments" / "quickstart.yaml", smoke=True)
    assert len(runs) == len(suite.jobs) and all(r.info.status == "FINISHED" for r in runs)
    capsys.readouterr()
    assert make_tables(["quickstart", "--tracking-uri", uri, "--no-log"]) == 0
    table = capsys.readouterr().out
    assert "I-Nets (base)" in table and "RS-Net" in table and "SAN" in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "×" in line]
    assert len(rows) == 3  # one per training resolution, 32 24 16 at the smoke setting
    assert all("| — " not in row for row in rows)  # every cell filled: no missing runs
