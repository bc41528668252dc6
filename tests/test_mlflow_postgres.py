"""MLflow on PostgreSQL: a real database cluster on 127.0.0.1 (tests/postgres_server.py), named directly as
the tracking URI and behind a real ``mlflow server`` with proxied artifacts.

Two ``resolab run`` drivers on the session's Ray record into one server at once while ``resolab status``
and ``make_tables.py`` read from other processes; every run is recorded once and nothing is lost. Bad
database URIs (a wrong password, a closed or silent port, a missing driver) and a server whose database
is down are refused in one line within seconds. Tests that need PostgreSQL are skipped where it is not
installed, with the reason.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from records import names
from tests.conftest import free_port, served_mlflow
from tests.postgres_server import PASSWORD, USER, missing, postgres_cluster
from tests.test_ray_suite import TINY_JOB as RAY_TINY_JOB

REPO = Path(__file__).resolve().parents[1]
FAST_S = 5.0  # the project's limit for refusing a tracking store that cannot be used

# One tiny job shape: 16-24 px, two steps, half a CPU: the three jobs of both suites run at once on the
# session's 2-CPU Ray.
TINY_JOB = {**RAY_TINY_JOB, "resources": {**RAY_TINY_JOB["resources"], "max_failures": 0}}
# Suite name -> its grid of methods, one job each.
SUITES = {"pg_a": ["parallel", "rsnet"], "pg_b": ["san"]}


@pytest.fixture(scope="module")
def postgres():
    if missing():
        pytest.skip(missing())
    with postgres_cluster() as pg:
        yield pg


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """(url, artifacts folder) of an ``mlflow server`` on a database of its own."""
    with served_mlflow(postgres.createdb("mlflow"), tmp_path_factory.mktemp("mlflow_pg")) as served:
        yield served


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RESOLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def write_suite(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "job": TINY_JOB, "grid": {"method.name": SUITES[name]}}))
    return path


def refused_in_process(main, argv: list[str], capsys) -> tuple[str, float]:
    """The one stderr line of a command that refused its input with exit status 2, and its time."""
    capsys.readouterr()
    start = time.monotonic()
    code = main(argv)
    seconds = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert "Traceback" not in out + err and PASSWORD not in out + err and "WRONG" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0], seconds


# ---------------------------------------------------------------- bad database URIs: one line, in seconds


def test_a_wrong_password_is_refused_in_one_line_with_the_fix(postgres, home, tmp_path, capsys):
    from analysis.make_tables import main as make_tables
    from orchestrator.cli.main import main as resolab

    wrong = postgres.uri("postgres", password="WRONG")
    shown = f"postgresql://{USER}:***@127.0.0.1:{postgres.port}/postgres"
    line, seconds = refused_in_process(resolab, ["run", str(write_suite(tmp_path, "pg_a")), "--tracking-uri", wrong],
                                       capsys)
    assert line == (f"resolab: cannot connect to the PostgreSQL tracking store {shown} (password authentication "
                    f"failed for user \"{USER}\"); give the user's right password: in the URI "
                    "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE), or, kept out of the command line, in "
                    "PGPASSWORD or ~/.pgpass")
    assert seconds < FAST_S
    line, seconds = refused_in_process(make_tables, ["quickstart", "--tracking-uri", wrong], capsys)
    assert line.startswith(f"make_tables: cannot connect to the PostgreSQL tracking store {shown} (password "
                           "authentication failed") and seconds < FAST_S


def test_a_closed_port_a_silent_port_a_missing_database_and_a_missing_driver_are_refused_fast(
        postgres, home, tmp_path, capsys):
    from orchestrator.cli.main import main as resolab
    from records.store import TrackingUnavailable, check_server

    suite = str(write_suite(tmp_path, "pg_a"))
    closed = free_port()
    line, seconds = refused_in_process(resolab, ["status", suite, "--tracking-uri", postgres.uri(port=closed)], capsys)
    assert line == (f"resolab: cannot connect to the PostgreSQL tracking store postgresql://{USER}:***@"
                    f"127.0.0.1:{closed}/postgres (Connection refused); start PostgreSQL on 127.0.0.1:{closed}, or "
                    "fix the host and port in --tracking-uri / MLFLOW_TRACKING_URI")
    assert seconds < FAST_S

    line, _ = refused_in_process(resolab, ["status", suite, "--tracking-uri", postgres.uri("nodb")], capsys)
    assert line.endswith(f"(database \"nodb\" does not exist); create it (createdb -h 127.0.0.1 -p "
                         f"{postgres.port} -U {USER} nodb) or fix the database name in --tracking-uri; MLflow "
                         "creates its tables itself")

    driverless = f"postgresql+pg8000://{USER}:{PASSWORD}@127.0.0.1:{postgres.port}/postgres"
    line, _ = refused_in_process(resolab, ["status", suite, "--tracking-uri", driverless], capsys)
    assert "needs the database driver pg8000 (Python module pg8000), which is not installed" in line

    # A port that takes the TCP connection and never answers: libpq's connect_timeout, not minutes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        start = time.monotonic()
        with pytest.raises(TrackingUnavailable, match=r"timeout expired\); start PostgreSQL on 127.0.0.1:"):
            check_server(postgres.uri(port=silent.getsockname()[1]), timeout=2)
        assert 1.5 < time.monotonic() - start < 4


def test_a_password_in_the_tracking_uri_is_never_printed_or_recorded():
    from records.runs import suite_run_tags
    from records.store import redacted

    command = "resolab run s.yaml --tracking-uri postgresql://team:s3cret@db:5432/mlflow --address auto"
    assert suite_run_tags("s", command, "host:1")[names.COMMAND] == (
        "resolab run s.yaml --tracking-uri postgresql://team:***@db:5432/mlflow --address auto")
    assert redacted("postgresql://team@db/mlflow") == "postgresql://team@db/mlflow"  # none to hide
    assert redacted("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_a_database_named_directly_keeps_its_artifacts_in_the_project_not_in_the_working_directory(home):
    from records.store import artifact_location

    # MLflow's default would be ./mlruns of wherever the command ran (for a Ray Job, a temporary folder).
    assert artifact_location("postgresql://team@db:5432/mlflow") == (home / "artifacts").resolve().as_uri()
    assert artifact_location("http://127.0.0.1:5000") is None  # a server decides for itself


# A second process that opens a store the moment it reads a line: MLflow is loaded first, so that it and
# this process open the new database at the same time.
OPENING = """
import sys
from mlflow.tracking import MlflowClient
from records.store import check_store
print("ready", flush=True)
sys.stdin.readline()
check_store(sys.argv[1])
print("opened", flush=True)
"""


def test_drivers_creating_the_schema_of_a_new_database_at_once_do_not_race(postgres):
    """MLflow's first migration of a database is not atomic: without resolab's advisory lock, of two
    processes opening a new database together one fails (a duplicate key in pg_type)."""
    from sqlalchemy import create_engine, text
    from records.store import check_store

    uri = postgres.createdb("fresh")
    other = subprocess.Popen([sys.executable, "-c", OPENING, uri], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert other.stdout.readline() == "ready\n"
        other.stdin.write("go\n")
        other.stdin.flush()
        check_store(uri)
        output = other.communicate(timeout=60)[0]
    finally:
        other.kill()
        other.wait()
    assert other.returncode == 0 and output.strip().endswith("opened"), output
    engine = create_engine(uri)
    with engine.connect() as connection:  # one schema, migrated to the end
        assert connection.execute(text("select count(*) from alembic_version")).scalar() == 1
    engine.dispose()


# ---------------------------------------------------------------- two suites into one server at once


def read(logs: dict) -> dict[str, str]:
    return {name: out.read_text() + err.read_text() for name, (out, err) in logs.items()}


@pytest.mark.slow
def test_two_suites_at_once_into_one_server_record_every_run_once_while_others_read(
        server, ray_head, tmp_path):
    from mlflow.tracking import MlflowClient
    import pandas as pd

    url, served = server
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")},
           "RESOLAB_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    paths = {name: write_suite(tmp_path, name) for name in SUITES}

    logs = {}

    def start(name: str, *args: str) -> subprocess.Popen:
        logs[name] = (tmp_path / f"{name}.out", tmp_path / f"{name}.err")
        with open(logs[name][0], "w") as out, open(logs[name][1], "w") as err:
            return subprocess.Popen([sys.executable, *args, "--tracking-uri", url], cwd=REPO, env=env,
                                    stdout=out, stderr=err, start_new_session=True)

    drivers = {name: start(name, "-m", "orchestrator.cli.main", "run", str(path), "--address", ray_head)
               for name, path in paths.items()}
    readers = {}
    client = MlflowClient(url)
    try:
        deadline = time.monotonic() + 240
        while not readers and time.monotonic() < deadline:  # once a job of pg_a is done, while the rest run
            experiment = client.get_experiment_by_name("pg_a")
            if experiment and client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED' and "
                                                 "tags.`resolab.kind` = 'job'", max_results=1):
                readers = {"status": start("status", "-m", "orchestrator.cli.main", "status", str(paths["pg_a"])),
                           "tables": start("tables", "analysis/make_tables.py", "quickstart", "--suite", "pg_a")}
            assert all(d.poll() in (None, 0) for d in drivers.values()), read(logs)
            time.sleep(0.5)
        for p in {**drivers, **readers}.values():
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in [*drivers.values(), *readers.values()]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert readers, "no job of pg_a finished in time"
    outputs = read(logs)
    codes = {name: p.returncode for name, p in {**drivers, **readers}.items()}
    assert codes == {"pg_a": 0, "pg_b": 0, "status": 0, "tables": 0}, outputs
    assert "finished 2," in outputs["pg_a"] and "finished 1," in outputs["pg_b"], outputs
    status = logs["status"][0].read_text().strip().splitlines()  # read while pg_a ran: its done job at least
    assert re.match(r"pg_a: done [12]/2 ", status[0]) and len(status) == 3, outputs["status"]
    assert "| " in outputs["tables"] and "logged under tables/ of run" in outputs["tables"], outputs["tables"]

    for suite, methods in SUITES.items():
        experiment = client.get_experiment_by_name(suite)
        jobs = client.search_runs([experiment.experiment_id], names.JOB_FILTER)
        parents = client.search_runs([experiment.experiment_id], names.tag_equals(names.KIND, names.SUITE_RUN))
        assert [p.info.status for p in parents] == ["FINISHED"]
        hashes = [r.data.tags[names.CONFIG_HASH] for r in jobs]
        assert len(hashes) == len(set(hashes)) == len(methods)  # each job once, none lost
        assert sorted(r.data.tags[names.METHOD] for r in jobs) == sorted(methods)
        for run in jobs:
            assert run.info.status == "FINISHED"
            assert run.data.tags[names.PARENT_RUN] == parents[0].info.run_id
            matrix = pd.read_parquet(client.download_artifacts(  # through the server's artifact proxy
                run.info.run_id, f"{names.MATRIX_DIR}/{names.MATRIX_PARQUET}", str(tmp_path / run.info.run_id)))
            fixed = matrix[matrix["mode"] == "fixed"]
            cells = {(int(r), int(t)) for r, t in zip(fixed["row"], fixed["test_res"])}
            trained = yaml.safe_load(run.data.params["data.resolutions"])
            assert cells == {(r, t) for r in trained for t in (24, 20, 16)}, (suite, run.data.tags, cells)
            for r, t in cells:  # every cell is a metric of the run too
                assert f"acc1/train{r}_test{t}" in run.data.metrics
        if suite == "pg_a":  # what make_tables logged into the parent run while its driver wrote to it too
            assert client.list_artifacts(parents[0].info.run_id, "tables"), "the logged table is gone"
    assert len(list(Path(served).rglob(names.MATRIX_PARQUET))) == 3  # the files went through the server


# ---------------------------------------------------------------- a server whose database is down


def test_a_server_whose_database_is_down_is_refused_in_seconds(server, postgres):
    """MLflow's /health says OK without its database; resolab asks it a query too. Runs last here:
    it stops the module's PostgreSQL, and starts it again on the same port."""
    from records.store import TrackingUnavailable, check_server

    url, _ = server
    check_server(url)  # up: passes
    postgres.stop()
    try:
        start = time.monotonic()
        with pytest.raises(TrackingUnavailable) as refused:
            check_server(url, timeout=2)
        assert time.monotonic() - start < 4
        assert str(refused.value).startswith(f"the MLflow tracking server at {url} is up but cannot read its "
                                             "backend store (a query of its experiments: ")
        assert "Check the server's database (its --backend-store-uri) and its log" in str(refused.value)
    finally:
        postgres.start()  # on its port again
    check_server(url)  # the server reconnects by itself: usable again, nothing to restart
