"""Every entry point on bad input: a non-zero exit, one line that names the problem, no traceback; an
unreachable tracking server within seconds, not MLflow's minutes of retries. None of these starts Ray.

Most cases call the commands' ``main(argv)`` in this process. A few run as a user runs them (a
subprocess), one per command family: they prove the installed entry points, the exit statuses a shell
sees, that a refusal comes before torch and MLflow load, and what Ctrl-C and --debug print.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from backbones.catalog import BACKBONES
from methods.catalog import METHODS

REPO = Path(__file__).resolve().parents[1]
RESOLAB = Path(sys.executable).parent / "resolab"  # the entry point `pip install -e .` installed
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens there
FAST_S = 10.0  # the project's limit for refusing an unreachable tracking server

JOB = {
    "model": {"backbone": "resnet_tiny", "small_input": True, "width": 8},
    "method": {"name": "rsnet"},
    "data": {"dataset": "synthetic", "resolutions": [32, 24], "loader_workers": 0,
             "synthetic": {"num_train": 20, "num_val": 10, "min_size": 32, "max_size": 40}},
    "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 1},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """RESOLAB_HOME of the commands: their stores, data and checkpoints stay in the test's folder."""
    monkeypatch.setenv("RESOLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


@pytest.fixture
def resolab(home, capsys):
    """``resolab ARGS`` in this process: its exit status (argparse's too), stdout, stderr and time."""
    from orchestrator.cli.main import main as resolab_main

    return lambda *args: in_process(resolab_main, list(args), capsys)


@pytest.fixture
def make_tables(home, capsys):
    """``python analysis/make_tables.py ARGS`` in this process."""
    from analysis.make_tables import main as make_tables_main

    return lambda *args: in_process(make_tables_main, list(args), capsys)


def in_process(main, argv: list[str], capsys) -> Result:
    capsys.readouterr()
    start = time.monotonic()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    seconds = time.monotonic() - start
    out, err = capsys.readouterr()
    return Result(code, out, err, seconds)


def in_a_subprocess(args: list[str], home: Path, **env) -> Result:
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment.update(RESOLAB_HOME=str(home), **env)
    start = time.monotonic()
    proc = subprocess.run(args, cwd=REPO, env=environment, capture_output=True, text=True, timeout=180)
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)


def refused(result: Result, prefix: str) -> str:
    """The one line on stderr of a command that refused its input (stdout may hold progress lines)."""
    both = result.out + result.err
    assert result.code != 0, both
    assert "Traceback" not in both, both
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def write_suite(folder: Path, **dotted) -> Path:
    """A one-job suite file; dotted keys override or add settings (``train.epoch=1`` writes a typo)."""
    job = yaml.safe_load(yaml.safe_dump(JOB))
    for key, value in dotted.items():
        *path, leaf = key.split(".")
        node = job
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = folder / "cli_errors.yaml"
    path.write_text(yaml.safe_dump({"name": "cli_errors", "job": job}))
    return path


def suite_command(command: str, suite: Path, tmp_path: Path) -> list[str]:
    if command == "train":
        return ["train", str(suite), "--out", str(tmp_path / "out")]
    return [command, str(suite), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]


# ---------------------------------------------------------------- as a user runs them: one per command family


def test_the_installed_resolab_refuses_a_config_typo_with_exit_status_2(tmp_path, home):
    suite = write_suite(tmp_path, **{"train.epoch": 1})
    result = in_a_subprocess([str(RESOLAB), *suite_command("run", suite, tmp_path)], home)
    assert result.code == 2
    assert "did you mean 'train.epochs'" in refused(result, "resolab: config error: ")


def test_an_unreachable_server_is_refused_before_the_heavy_imports(tmp_path, home):
    """The whole command, Python's start and its imports included, takes seconds."""
    args = [sys.executable, "-m", "orchestrator.cli.main", "run", str(write_suite(tmp_path)),
            "--tracking-uri", UNREACHABLE]
    result = in_a_subprocess(args, home)
    assert result.code == 2
    assert UNREACHABLE in refused(result, "resolab: cannot reach the MLflow tracking server at ")
    assert result.seconds < FAST_S


def test_make_tables_refuses_an_unreachable_server_in_seconds(home):
    result = in_a_subprocess([sys.executable, "analysis/make_tables.py", "quickstart", "--tracking-uri",
                              UNREACHABLE], home)
    assert result.code == 2
    line = refused(result, "make_tables: cannot reach the MLflow tracking server at ")
    assert UNREACHABLE in line and "--tracking-uri" in line
    assert result.seconds < FAST_S


def test_describe_usage_errors_exit_with_status_2(home):
    result = in_a_subprocess([str(RESOLAB), "describe", "--backbone", "resnet_tiny", "--resolutions", "224px"],
                             home)
    assert result.code == 2
    assert "resolab describe --help" in refused(result, "resolab describe: error: argument --resolutions: ")


def test_debug_shows_the_traceback(tmp_path, home):
    result = in_a_subprocess([str(RESOLAB), "status", str(write_suite(tmp_path)), "--tracking-uri", UNREACHABLE,
                              "--debug"], home)
    assert result.code == 1
    assert "Traceback" in result.err and "TrackingUnavailable" in result.err


def test_ctrl_c_during_training_ends_with_one_line_and_no_traceback(tmp_path, home):
    path = write_suite(tmp_path, **{"train.epochs": 50, "train.max_steps_per_epoch": None,
                                    "data.synthetic.num_train": 400})
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # As in a terminal: a shell that starts a command in the background without job control (``cmd &``
    # in a script, nohup) makes it ignore SIGINT, and the test run's children would inherit that.
    proc = subprocess.Popen([str(RESOLAB), "train", str(path), "--out", str(tmp_path / "o")],
                            cwd=REPO, env={**environment, "RESOLAB_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().startswith("job ")  # training has started
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    assert err.strip().splitlines() == [
        "resolab: interrupted; what finished is kept. Run the same command again to go on from there."]


# ---------------------------------------------------------------- config and data


@pytest.mark.parametrize("command", ["run", "evaluate", "status", "train"])
def test_a_config_typo_is_one_line_naming_the_key(command, tmp_path, resolab):
    suite = write_suite(tmp_path, **{"train.epoch": 1})
    result = resolab(*suite_command(command, suite, tmp_path))
    assert result.code == 2
    line = refused(result, "resolab: config error: ")
    assert "'train.epoch'" in line and "did you mean 'train.epochs'" in line


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_missing_dataset_root_is_one_line_with_the_fix(command, tmp_path, resolab):
    missing = tmp_path / "imagenet"
    suite = write_suite(tmp_path, **{"data.dataset": "imagefolder", "data.root": str(missing)})
    line = refused(resolab(*suite_command(command, suite, tmp_path)), "resolab: ")
    assert f"dataset root not found: {missing}" in line and "Fix: set data.root" in line
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was recorded


def test_a_batch_larger_than_the_data_is_one_line(tmp_path, resolab):
    suite = write_suite(tmp_path, **{"train.batch_size": 100000})
    line = refused(resolab(*suite_command("train", suite, tmp_path)), "resolab: config error: ")
    assert "train.batch_size=100000 is larger than the training set (20 images" in line and "lower it" in line


# ---------------------------------------------------------------- the tracking store


@pytest.mark.parametrize("command", ["run", "evaluate", "status"])
def test_an_unreachable_tracking_server_is_refused_in_seconds(command, tmp_path, resolab):
    result = resolab(command, str(write_suite(tmp_path)), "--tracking-uri", UNREACHABLE)
    assert result.code == 2
    line = refused(result, "resolab: cannot reach the MLflow tracking server at ")
    assert UNREACHABLE in line and "--tracking-uri" in line
    assert result.seconds < FAST_S


def test_the_server_from_the_environment_is_checked_too(tmp_path, resolab, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", UNREACHABLE)
    result = resolab("status", str(write_suite(tmp_path)))
    assert UNREACHABLE in refused(result, "resolab: cannot reach the MLflow tracking server")
    assert result.seconds < FAST_S


def test_a_server_that_never_answers_is_refused_in_seconds(tmp_path, resolab):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = resolab("status", str(write_suite(tmp_path)), "--tracking-uri", url)
    assert "timed out" in refused(result, f"resolab: cannot reach the MLflow tracking server at {url}")
    assert result.seconds < FAST_S


def test_a_file_that_is_no_store_is_one_line(tmp_path, resolab):
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("not a database\n" * 100)
    result = resolab("status", str(write_suite(tmp_path)), "--tracking-uri", f"sqlite:///{not_a_store}")
    assert "file is not a database" in refused(result, "resolab: cannot open the MLflow tracking store sqlite:///")


def test_status_passes_the_check_of_a_real_server(tmp_path, resolab, mlflow_server):
    url, _ = mlflow_server
    result = resolab("status", str(write_suite(tmp_path)), "--tracking-uri", url)
    assert result.code == 0, result.err
    assert "pending     rsnet-resnet_tiny" in result.out


def test_make_tables_bad_filter_is_one_line(tmp_path, make_tables, empty_db):
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    shutil.copy(empty_db, db)
    client = MlflowClient(f"sqlite:///{db}")
    run_id = client.create_run(client.create_experiment("quickstart"), tags={"resolab.kind": "job"}).info.run_id
    client.set_terminated(run_id)
    result = make_tables("quickstart", "--tracking-uri", f"sqlite:///{db}", "--no-log", "--filter", "params.x === 3")
    assert result.code == 2
    refused(result, "make_tables: ")


def test_make_tables_unknown_table_is_one_line(make_tables):
    result = make_tables("quickstart_typo")
    assert result.code == 2
    line = refused(result, "make_tables: unknown table(s) quickstart_typo")
    assert "quickstart" in line.split("choose from", 1)[1]


def test_make_tables_usage_errors_are_one_line(make_tables):
    result = make_tables("quickstart", "--no-such-option")
    assert result.code == 2
    line = refused(result, "make_tables.py: error:")
    assert "--no-such-option" in line and "--help" in line


# ---------------------------------------------------------------- describe


@pytest.mark.parametrize("resolutions", [["224", "0"], ["-5"], ["224px"]])
def test_describe_refuses_a_resolution_that_is_not_a_positive_number(resolutions, resolab):
    result = resolab("describe", "--backbone", "resnet_tiny", "--resolutions", *resolutions)
    assert result.code == 2
    line = refused(result, "resolab describe: error: argument --resolutions: ")
    assert "resolab describe --help" in line


@pytest.mark.parametrize("option, typo, choice", [("--backbone", "resnet19", "resnet18"),
                                                  ("--method", "rsnett", "rsnet")])
def test_describe_names_the_choices_of_a_typo(option, typo, choice, resolab):
    args = ["--backbone", "resnet18", "--method", "rsnet"]
    args[args.index(option) + 1] = typo
    line = refused(resolab("describe", *args), f"resolab describe: error: argument {option}: invalid choice")
    assert typo in line and f"'{choice}'" in line


def test_describe_refuses_quantized_activations_on_a_backbone_without_a_preact_twin_in_one_line(resolab):
    line = refused(resolab("describe", "--backbone", "resnet_tiny", "--act-bits", "2"),
                   "resolab: config error: model.act_bits=2")
    assert "model.backbone=preact_resnet_tiny" in line


@pytest.mark.parametrize("method", ["rsnet", "individual"])
def test_describe_refuses_a_resolution_given_twice_as_a_suite_does(method, resolab):
    line = refused(resolab("describe", "--backbone", "resnet_tiny", "--method", method,
                           "--resolutions", "224", "192", "224"), "resolab: config error: ")
    assert line.startswith("resolab: config error: data.resolutions=[224, 224, 192] lists 224 more than once: "
                           "with one crop for all resolutions every copy sees the same image")


# ---------------------------------------------------------------- what a suite path or a setting is


def test_a_suite_that_is_a_directory_or_a_binary_file_is_named_so(tmp_path, resolab):
    fix = "a suite is a YAML file such as experiments/quickstart.yaml"
    assert refused(resolab("run", str(tmp_path), "--dry-run"), "resolab: ") == \
        f"resolab: config error: {tmp_path} is a directory; {fix}"
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xb7\xac\xce")  # a zip's first bytes
    assert refused(resolab("run", str(binary), "--dry-run"), "resolab: ") == \
        f"resolab: config error: {binary} is not a text file (byte 10 is not UTF-8); {fix}"


def test_a_boolean_number_of_bits_in_a_suite_is_one_line(tmp_path, resolab):
    suite = write_suite(tmp_path, **{"model.backbone": "preact_resnet_tiny", "model.act_bits": True})
    line = refused(resolab("run", str(suite), "--dry-run"), "resolab: ")
    assert line == (f"resolab: config error: {suite}: job: model.act_bits: expected one of 1, 2, 3, 4, 5, 6, 7, 8, 32, "
                    "got true (bool)")


# ---------------------------------------------------------------- --debug and help


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_lets_the_error_through_in_either_place(where, tmp_path, resolab):
    from records.store import TrackingUnavailable

    command = ["status", str(write_suite(tmp_path)), "--tracking-uri", UNREACHABLE]
    with pytest.raises(TrackingUnavailable):
        resolab(*(["--debug", *command] if where == "before" else [*command, "--debug"]))


def test_help_is_plain_text_and_lists_the_choices_and_states(resolab):
    top = resolab("--help")
    assert top.code == 0 and "``" not in top.out and "--debug" in top.out
    status = resolab("status", "--help").out
    for state in ("done", "running", "interrupted", "failed", "pending"):
        assert f"\n  {state} " in status, state
    describe = resolab("describe", "--help").out
    assert "{" + ",".join(BACKBONES) + "}" in describe and "{" + ",".join(METHODS) + "}" in describe


def test_train_counts_epochs_from_one():
    from orchestrator.engine.loop import LocalRuntime

    lines: list[str] = []
    LocalRuntime(device="cpu", log=lines.append).report({"epoch": 0, "loss/total": 2.0, "acc1/r32": 10.0}, None)
    assert lines == ["epoch 1: loss/total=2  acc1/r32=10"]
