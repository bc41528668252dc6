"""Interrupts: Ctrl-C during `resolab run` ends its runs as KILLED and exits 130, and Ctrl-C while the
first command creates the MLflow store leaves no store behind, never a half-built one.

The half-built stores here are made the way a user made them: MLflow's own schema migration, in a real
process, stopped by a real SIGINT part-way (after half of the SQL statements a full creation runs).
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cli.main import main

REPO = Path(__file__).resolve().parents[1]

# Run in a child process: counts the SQL statements of a full store creation (a.db), then creates b.db
# the same way and sends itself SIGINT after half as many. argv: MODE (mlflow: a plain MLflow client, as
# an interrupted first run used to; resolab: resolab's store check), DIR.
INTERRUPTED_CREATION = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
from mlflow.tracking import MlflowClient
from records.store import check_store

mode, folder = sys.argv[1], sys.argv[2]
count, limit = [0], [None]

@event.listens_for(Engine, "after_cursor_execute")
def _statement(*args):
    count[0] += 1
    if count[0] == limit[0]:
        os.kill(os.getpid(), signal.SIGINT)

open_store = (lambda uri: MlflowClient(uri).search_experiments(max_results=1)) if mode == "mlflow" else check_store
open_store(f"sqlite:///{folder}/a.db")
total, count[0], limit[0] = count[0], 0, count[0] // 2
try:
    open_store(f"sqlite:///{folder}/mlflow.db")
except KeyboardInterrupt:
    print(f"interrupted after {count[0]} of {total} statements")
    sys.exit(130)
print(f"not interrupted: {count[0]} of {total} statements")
"""


def interrupted_creation(mode: str, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", INTERRUPTED_CREATION, mode, str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=180,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc.stdout + proc.stderr
    return proc.stdout.strip()


def status_line(home: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(yaml.safe_dump({"name": "tiny", "job": JOB}))
    capsys.readouterr()
    code = main(["status", str(suite)])
    out, err = capsys.readouterr()
    return code, err


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RESOLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_an_interrupted_store_creation_leaves_no_store_and_the_next_command_creates_it(home, tmp_path, capsys):
    print(interrupted_creation("resolab", home))
    db = home / "mlflow.db"
    assert not db.exists() and sorted(p.name for p in home.iterdir()) == ["a.db", "a.db.lock", "mlflow.db.lock"]
    code, err = status_line(home, tmp_path, capsys)
    assert (code, err) == (0, "")
    with sqlite3.connect(db) as connection:  # a whole schema: MLflow's migrations ran to the end
        assert connection.execute("select count(*) from alembic_version").fetchone() == (1,)
    MlflowClient(f"sqlite:///{db}").search_experiments()


def test_a_half_built_store_without_runs_gets_one_line_saying_to_delete_it(home, tmp_path, capsys):
    print(interrupted_creation("mlflow", home))
    db = home / "mlflow.db"
    with pytest.raises(Exception):  # the defect itself: MLflow cannot open what it left
        MlflowClient(f"sqlite:///{db}").search_experiments()
    code, err = status_line(home, tmp_path, capsys)
    assert code == 2
    assert err == (f"resolab: the MLflow store {db} was left half-created (its first schema migration was "
                   f"interrupted) and holds no runs: delete it (rm {db}) and run the command again, which "
                   "creates a new one\n")


def test_a_store_with_runs_that_does_not_open_is_never_called_deletable(home, tmp_path, capsys, empty_db):
    built = tmp_path / "built.db"  # made elsewhere: MLflow caches each store it opened, checked or not
    built.write_bytes(empty_db.read_bytes())
    client = MlflowClient(f"sqlite:///{built}")
    client.create_run(client.create_experiment("kept"))
    with sqlite3.connect(built) as connection:  # as a store of an older MLflow reads to this one
        connection.execute("update alembic_version set version_num = '451aebb31d03'")
    db = home / "mlflow.db"
    home.mkdir()
    db.write_bytes(built.read_bytes())
    code, err = status_line(home, tmp_path, capsys)
    assert code == 2
    assert err == (f"resolab: MLflow cannot open the store {db}, which holds 1 run (schema revision 451aebb31d03); "
                   f"keep it: back it up (cp {db} {db}.bak), then migrate it with "
                   f"`mlflow db upgrade sqlite:///{db}`\n")
    assert "--tracking-uri" not in err and "rm " not in err


JOB = {"model": {"backbone": "resnet_tiny", "small_input": True, "width": 8}, "method": {"name": "rsnet"},
       "data": {"resolutions": [24, 16], "loader_workers": 0,
                "synthetic": {"num_train": 400, "num_val": 16, "min_size": 24, "max_size": 32}},
       "train": {"epochs": 40, "batch_size": 8, "lr": 0.05},
       "eval": {"batch_size": 16, "max_batches": 1, "calib_batches": 1, "test_resolutions": [24, 16]},
       "resources": {"workers": 1, "cpus_per_worker": 1.0, "max_failures": 0}}


def job_runs(db: Path) -> dict[str, list]:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("ctrlc")
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id])
    return {kind: [r for r in runs if r.data.tags.get("resolab.kind") == kind] for kind in ("suite", "job")}


def test_ctrl_c_during_a_suite_is_an_interrupt_not_a_failure(home, tmp_path, capsys, ray_head, monkeypatch,
                                                              empty_db):
    """``driver``: SIGINT to `resolab run` alone (kill -INT PID), a driver on the session's Ray (whose
    start it saves); ``terminal``: to its whole process group, as Ctrl-C in a terminal does, with the
    local Ray the command starts, whose processes get it too. Both at once, each with a project folder of
    its own: most of each is waiting (Ray's start, the trials' start, the shutdown), which the other fills."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cases = {"driver": False, "terminal": True}
    homes, suites, procs = {}, {}, {}
    for case, whole_group in cases.items():
        homes[case] = home.parent / f"home-{case}"
        homes[case].mkdir()  # with the store made: a copy of the session's migrated empty one
        (homes[case] / "mlflow.db").write_bytes(empty_db.read_bytes())
        suites[case] = tmp_path / case / "ctrlc.yaml"
        suites[case].parent.mkdir()
        suites[case].write_text(yaml.safe_dump({"name": "ctrlc", "job": JOB, "grid": {"train.lr": [0.05, 0.02]}}))
        joins = [] if whole_group else ["--address", ray_head]
        # A background shell makes its children ignore SIGINT; a terminal's foreground command does not.
        procs[case] = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli.main", "run", str(suites[case]), *joins], cwd=REPO,
            env={**environment, "RESOLAB_HOME": str(homes[case])}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        training_since: dict[str, float] = {}  # case -> when a job of it was first seen RUNNING
        signalled: set[str] = set()
        while len(signalled) < len(cases):
            for case, whole_group in cases.items():
                if case in signalled:
                    continue
                proc, db = procs[case], homes[case] / "mlflow.db"
                if case not in training_since:
                    if any(r.info.status == "RUNNING" for r in job_runs(db).get("job", []) if db.exists()):
                        training_since[case] = time.monotonic()
                    else:
                        assert proc.poll() is None and time.monotonic() < deadline, (case, proc.communicate())
                elif time.monotonic() - training_since[case] >= 3:  # the job trains
                    if whole_group:
                        os.killpg(proc.pid, signal.SIGINT)
                    else:
                        proc.send_signal(signal.SIGINT)
                    signalled.add(case)
            time.sleep(0.2)
        outputs = {case: proc.communicate(timeout=120) for case, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    for case in cases:
        proc, (out, err) = procs[case], outputs[case]
        assert proc.returncode == 130, (case, out + err)
        assert "Traceback" not in out + err and "FAILED" not in out + err, case
        assert err.strip().splitlines() == [
            "resolab: interrupted; what finished is kept. Run the same command again to go on from there."], case

        runs = job_runs(homes[case] / "mlflow.db")
        assert [r.info.status for r in runs["suite"]] == ["KILLED"], case
        assert runs["job"] and {r.info.status for r in runs["job"]} == {"KILLED"}, case
        assert {r.data.tags["resolab.error"] for r in runs["job"]} == {
            "interrupted (Ctrl-C / SIGINT); run the same command again to resume"}, case
        monkeypatch.setenv("RESOLAB_HOME", str(homes[case]))
        capsys.readouterr()
        assert main(["status", str(suites[case])]) == 0
        head, *lines = capsys.readouterr().out.splitlines()
        assert head.startswith(f"ctrlc: done 0/2  running 0  interrupted {len(runs['job'])}  failed 0"), case
        for run in runs["job"]:
            line = next(ln for ln in lines if f" {run.data.tags['resolab.job']} " in ln)
            assert line.split()[:4] == ["interrupted", run.data.tags["resolab.job"], "run", run.info.run_id]
            assert "run the same command again to resume" in line
