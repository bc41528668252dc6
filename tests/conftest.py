"""Shared fixtures. Each fixture is small and named for what it gives; add new ones in their own block."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobspec import JobConfig


# ---------------------------------------------------------------- tests that need a GPU


def pytest_collection_modifyitems(config, items):
    """Modules on the session's local Ray run last, one after another (see ``ray_head``). Tests marked
    ``gpu`` run only where torch sees a CUDA device; elsewhere they are skipped with the reason. torch is
    imported only when such a test was collected (it costs seconds)."""
    on_ray = {item.module for item in items if {"local_ray", "ray_head"} & set(item.fixturenames)}
    items.sort(key=lambda item: item.module in on_ray)  # stable: the order within each group stays
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is false)")
    for item in gpu_tests:
        item.add_marker(skip)


# ---------------------------------------------------------------- tiny training jobs (CPU, seconds)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """Where the tiny synthetic ImageFolder is written (on first use, by orchestrator.data.loaders)."""
    return tmp_path_factory.mktemp("synthetic") / "tiny"


def set_dotted(cfg: JobConfig, key: str, value) -> None:
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = getattr(node, part)
    if not hasattr(node, leaf):
        raise KeyError(key)  # a typo in a test must not silently do nothing
    setattr(node, leaf, value)


@pytest.fixture
def tiny_job(tiny_data_root):
    """Factory: a JobConfig for a 2-step resnet_tiny run on 16-32 px synthetic data; dotted overrides.

        cfg = tiny_job(**{"method.name": "san", "method.meta_hidden": 8})
    """
    def make(**overrides) -> JobConfig:
        cfg = JobConfig()
        defaults = {
            "model.backbone": "resnet_tiny", "model.small_input": True, "model.width": 8,
            "method.name": "rsnet",
            "data.root": str(tiny_data_root), "data.num_classes": 10, "data.resolutions": [32, 24, 16],
            "data.loader_workers": 0,
            "data.synthetic.num_train": 40, "data.synthetic.num_val": 20,
            "data.synthetic.min_size": 32, "data.synthetic.max_size": 40,
            "train.epochs": 1, "train.batch_size": 8, "train.max_steps_per_epoch": 2, "train.lr": 0.05,
            "eval.batch_size": 8, "eval.max_batches": 1, "eval.calib_batches": 1,
            "eval.test_resolutions": [40, 32, 28, 16],
        }
        for key, value in {**defaults, **overrides}.items():
            set_dotted(cfg, key, value)
        return cfg.validate()
    return make


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (CPU results then do not depend on the machine's core count)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- MLflow stores


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory):
    """A migrated, empty MLflow SQLite database; copying it saves the ~2 s schema migration per store."""
    from mlflow.tracking import MlflowClient
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


# ---------------------------------------------------------------- a real MLflow server on 127.0.0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_or_kill(process: subprocess.Popen, timeout: float) -> None:
    """Wait ``timeout`` s for a process asked to stop (its own session); then kill its whole group."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout:.0f} s")


@contextlib.contextmanager
def served_mlflow(backend_uri: str, folder: Path):
    """``mlflow server`` on ``backend_uri`` with proxied artifacts (the default ``--serve-artifacts``) in
    ``folder/artifacts``: (url, that folder). The server starts helper processes, so it gets its own
    group, killed by the server's PID."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "mlflow-server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # MLflow's job runner (GenAI jobs, a huey process) serves nothing resolab does: seconds saved
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_healthy(url, process)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n{log_path.read_text()[-3000:]}") from None
            yield url, folder / "artifacts"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            wait_or_kill(process, 15)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on a SQLite file, one for the session (it takes seconds to start; each test
    records into experiments of its own): (url, where its artifacts land)."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    with served_mlflow(f"sqlite:///{folder / 'server.db'}", folder / "served") as served:
        yield served


# ---------------------------------------------------------------- a local Ray for the Ray suite tests


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private RESOLAB_HOME (MLflow store, synthetic data, checkpoints) for this module."""
    path = tmp_path_factory.mktemp("resolab_home")
    old = os.environ.get("RESOLAB_HOME")
    os.environ["RESOLAB_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RESOLAB_HOME", None)
    else:
        os.environ["RESOLAB_HOME"] = old


# Starting a local Ray takes seconds, so the session starts one head, in a process of its own that owns
# it, and each module connects a driver to it and disconnects at its end (tests check that commands which
# need no Ray leave it uninitialised). Those modules run last: an idle head costs about 5 % of a core.
# The head never records its address in /tmp/ray, where a plain ``ray.init()`` (the ``resolab run``
# subprocesses of other tests) would find and join it, and its dashboard takes a free port, not Ray's
# default 8265 that a user's Ray may hold.
# ``address="local"``: a new head even where a ``ray start`` named its cluster in /tmp/ray.
RAY_HEAD = """
import pathlib, sys, ray
ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=int(sys.argv[1]),
         log_to_driver=False, logging_level="ERROR")
pathlib.Path(sys.argv[2] + ".part").write_text(ray.get_runtime_context().gcs_address)
pathlib.Path(sys.argv[2] + ".part").rename(sys.argv[2])
sys.stdin.read()  # until the test session closes stdin (or dies): then the head shuts down with this process
"""


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """The GCS address of the session's local Ray head (2 CPUs)."""
    folder = tmp_path_factory.mktemp("ray_head")
    # Jobs get RESOLAB_HOME from the driver that submits them; this one only catches what would leak.
    # Auth off, as resolab's drivers set it (orchestrator.cluster.suite), whichever module joins first.
    env = {**os.environ, "RESOLAB_HOME": str(folder / "home"), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    address_file = folder / "address"
    process = subprocess.Popen([sys.executable, "-c", RAY_HEAD, str(free_port()), str(address_file)],
                               stdin=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not address_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the session's Ray head did not start (exit status {process.poll()})")
            time.sleep(0.1)
        yield address_file.read_text()
    finally:
        process.stdin.close()
        wait_or_kill(process, 60)


@pytest.fixture(scope="module")
def local_ray(home, ray_head):
    """A driver on the session's local Ray for this module, quiet; disconnected at the module's end."""
    import ray
    ray.init(address=ray_head, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


# ---------------------------------------------------------------- an S3 API server on 127.0.0.1 (moto)


S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's standalone S3 server (the one Ray's own tests use) on a free port: its endpoint URL. Each
    test makes its own bucket (``s3_bucket``)."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start (exit status {process.poll()})")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
        log.close()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, request):
    """A fresh bucket on ``s3_server``, with the endpoint and credentials in this process's environment
    (as a user sets them); its ``s3://`` URI."""
    import boto3
    for key, value in {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    name = "b-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{os.getpid()}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"
