"""A Ray cluster of real ``ray start`` nodes on 127.0.0.1 whose worker nodes have disks of their own, and a
local S3 server: what the multi-node tests run on.

Every node is a ``ray start --block`` process in a session of its own, stopped by process group. Each
worker node runs inside ``unshare --mount`` with a private tmpfs on /tmp (root only, as here and on CI):
a file one of its processes writes under /tmp exists on that node alone, as on a machine of its own, so a
path written on one node and read on another fails as it would on a real cluster. The head has no CPUs, so
every job runs on a worker node. Every port of every node is drawn here (distinct, none of Ray's
defaults) and each node has its own ``--temp-dir``, so this cluster never meets the session's local Ray
(tests/conftest.py) or a user's, and leaves nothing in /tmp/ray. Nodes are started with
``--node-ip-address 127.0.0.1``; Ray itself advertises the machine's own address for them (it replaces a
loopback address, ``ray._private.services.resolve_ip_for_localhost``) and its GCS and raylets listen on
every interface, while the dashboard binds 127.0.0.1 as asked.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Ray's own defaults (GCS, dashboard, client server, dashboard agent) and its default worker port range.
RAY_DEFAULT_PORTS = {6379, 8265, 10001, 52365}
PORT_SPAN = range(20000, 30000)  # below Linux's ephemeral range and above Ray's default worker ports
WORKER_PORTS = 40  # per node: a job's trial, Train workers and Ray's helper actors each take one
WORKER_TMP = "/tmp"  # what each worker node gets a private tmpfs for
REPO = Path(__file__).resolve().parent.parent

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class Ports:
    """Free TCP ports on 127.0.0.1, each handed out once."""

    def __init__(self):
        self.taken: set[int] = set(RAY_DEFAULT_PORTS)

    @staticmethod
    def _free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def one(self) -> int:
        return self.range(1)

    def range(self, n: int) -> int:
        """The first of ``n`` consecutive free ports."""
        for _ in range(500):
            base = random.randrange(PORT_SPAN.start, PORT_SPAN.stop - n)
            block = range(base, base + n)
            if not self.taken & set(block) and all(self._free(p) for p in block):
                self.taken |= set(block)
                return base
        raise RuntimeError(f"no {n} consecutive free ports in {PORT_SPAN}")


def stop_groups(processes: list[subprocess.Popen], grace_s: float = 2.0) -> None:
    """SIGTERM each process group, SIGKILL what is left after ``grace_s``; the leaders are reaped. A raylet
    waits ~10 s on SIGTERM for its workers to exit cleanly; a test cluster keeps nothing that needs it (a
    worker node's tmpfs goes with its last process, the head's temp dir is removed)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for process in processes:
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while any(group_members(p.pid) for p in processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not any(group_members(p.pid) for p in processes):
            break
    for process in processes:
        process.wait(timeout=10)


def group_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in process group ``pgid`` (zombies left out)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append((int(entry.name), comm))
    return members


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    log: Path
    resource: str  # a custom resource only this node has: {resource: 1}

    def raylet_pid(self) -> int:
        pids = [pid for pid, comm in group_members(self.process.pid) if comm == "raylet"]
        if len(pids) != 1:
            raise RuntimeError(f"node {self.name}: raylet processes {pids}")
        return pids[0]


def _node_ports(ports: Ports) -> list[str]:
    base = ports.range(WORKER_PORTS)
    return ["--node-manager-port", str(ports.one()), "--object-manager-port", str(ports.one()),
            "--dashboard-agent-listen-port", str(ports.one()), "--dashboard-agent-grpc-port", str(ports.one()),
            "--metrics-export-port", str(ports.one()), "--runtime-env-agent-port", str(ports.one()),
            "--min-worker-port", str(base), "--max-worker-port", str(base + WORKER_PORTS - 1)]


def node_env() -> dict[str, str]:
    """What every node's processes start with: no address to wander off to, no project state or object-store
    credentials of the test process (a job gets those from the command that submits it, as on a cluster)."""
    drop = {"RAY_ADDRESS", "RESOLAB_HOME", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", *S3_ENV}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1",
               # The GCS declares a silent node dead after 3 missed checks of 0.5 s (Ray's defaults: 5 of
               # 3 s): a lost node is noticed in seconds, as a test can afford to wait.
               RAY_health_check_period_ms="500", RAY_health_check_timeout_ms="500",
               RAY_health_check_failure_threshold="3",
               # Ray Train's controller polls a DDP job's workers every 0.5 s (default 2 s): a rank that
               # exits, and the end of each job, are seen sooner.
               RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5")
    return env


@dataclass
class RayNodes:
    """A head (no CPUs) and worker nodes, each a ``ray start --block`` process group."""

    folder: Path
    ports: Ports = field(default_factory=Ports)
    nodes: dict[str, Node] = field(default_factory=dict)
    head_temp: str = ""
    bind_points: list = field(default_factory=list)  # empty folders on the host, one per worker node
    ids: dict[str, str] = field(default_factory=dict)  # node name -> Ray node id, kept after a node dies
    gcs_port: int = 0
    dashboard_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _spawn(self, name: str, args: list[str], private_tmp: bool, resource: str) -> Node:
        log = self.folder / f"{name}.log"
        command = ["ray", "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                   "--object-store-memory", str(100 * 2**20), "--num-gpus", "0",
                   "--resources", json.dumps({resource: 1}), *args, *_node_ports(self.ports)]
        if private_tmp:
            # A mount namespace of its own with a fresh tmpfs on /tmp; the node's temp dir lies inside it.
            line = " ".join(map(_quote, command + ["--temp-dir", f"{WORKER_TMP}/ray-{name}"]))
            mounts = f"mount -t tmpfs -o size=2g tmpfs {WORKER_TMP}"
            if REPO.is_relative_to(WORKER_TMP):
                # A checkout under /tmp (a CI clone) holds the installed package: the node keeps seeing it,
                # bound through an empty folder outside /tmp, as a cluster's nodes all have the code.
                keep = tempfile.mkdtemp(prefix="resolab-checkout-", dir="/var/tmp")
                self.bind_points.append(keep)
                mounts = (f"mount --bind {_quote(str(REPO))} {keep} && {mounts} && mkdir -p {_quote(str(REPO))} && "
                          f"mount --bind {keep} {_quote(str(REPO))}")
            command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", f"{mounts} && exec {line}"]
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=node_env(), cwd=self.folder, start_new_session=True)
        node = Node(name, process, log, resource)
        self.nodes[name] = node
        return node

    def start_head(self) -> Node:
        self.gcs_port, self.dashboard_port = self.ports.one(), self.ports.one()
        # Short, so that the node's Unix socket paths stay under the 107-character limit.
        self.head_temp = tempfile.mkdtemp(prefix="rl-head-")
        return self._spawn("head", ["--head", "--port", str(self.gcs_port), "--num-cpus", "0",
                                    "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                                    "--dashboard-port", str(self.dashboard_port),
                                    "--ray-client-server-port", str(self.ports.one()),
                                    "--temp-dir", self.head_temp], private_tmp=False, resource="head")

    def start_worker(self, name: str, cpus: float = 1) -> Node:
        return self._spawn(name, ["--address", self.address, "--num-cpus", str(cpus)], private_tmp=True,
                           resource=f"node_{name}")

    def alive_nodes(self) -> list[dict]:
        """Ray's view: one dict per alive node (node_id, resources_total, …), from the dashboard."""
        with urllib.request.urlopen(f"{self.dashboard_url}/api/v0/nodes?limit=100&detail=1", timeout=5) as r:
            rows = json.load(r)["data"]["result"]["result"]
        return [row for row in rows if row["state"] == "ALIVE"]

    def node_id(self, name: str) -> str:
        if name not in self.ids:
            resource = self.nodes[name].resource
            ids = [row["node_id"] for row in self.alive_nodes() if resource in row["resources_total"]]
            if len(ids) != 1:
                raise RuntimeError(f"node {name}: alive Ray nodes with {resource}: {ids}")
            self.ids[name] = ids[0]
        return self.ids[name]

    def node_name(self, node_id: str) -> str:
        """The name of a node this harness started (``node_id`` itself for another one)."""
        return next((name for name, known in self.ids.items() if known == node_id), node_id)

    def wait_alive(self, names: list[str], timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        want = {self.nodes[n].resource for n in names}
        while True:
            for name in names:
                if self.nodes[name].process.poll() is not None:
                    raise RuntimeError(f"ray node {name} exited: {self.nodes[name].log.read_text()[-3000:]}")
            try:
                have = {k for row in self.alive_nodes() for k in row["resources_total"]}
            except (OSError, KeyError, ValueError):
                have = set()
            if want <= have:
                for name in names:
                    self.node_id(name)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"ray nodes {names} not alive after {timeout:.0f} s (alive: {sorted(have)})")
            time.sleep(0.5)

    def stop(self) -> None:
        stop_groups([node.process for node in self.nodes.values()])
        if self.head_temp:  # the worker nodes' temp dirs went with their tmpfs
            shutil.rmtree(self.head_temp, ignore_errors=True)
        for folder in self.bind_points:  # empty again once the node's namespace is gone
            shutil.rmtree(folder, ignore_errors=True)


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def start_cluster(folder: Path, workers: tuple[str, ...] = ("a", "b")) -> RayNodes:
    """A head and ``workers`` (1 CPU each), all alive; on failure everything started is stopped."""
    cluster = RayNodes(folder)
    try:
        cluster.start_head()
        cluster.wait_alive(["head"])
        for name in workers:
            cluster.start_worker(name)
        cluster.wait_alive(list(workers))
    except BaseException:
        cluster.stop()
        raise
    return cluster


# ---------------------------------------------------------------- moto's S3 server


@dataclass
class S3Server:
    process: subprocess.Popen
    port: int
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables a driver needs to reach the bucket (endpoint and dummy credentials)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **S3_ENV}

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                            region_name=S3_ENV["AWS_DEFAULT_REGION"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        stop_groups([self.process], grace_s=5)


def start_s3(folder: Path, ports: Ports, bucket: str = "resolab") -> S3Server:
    port = ports.one()
    log = open(folder / "moto.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    server = S3Server(process, port, bucket)
    deadline = time.monotonic() + 30
    while True:
        try:
            server.client().create_bucket(Bucket=bucket)
            return server
        except Exception as exc:  # connection refused until the server listens
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto server on port {port} did not start: {exc}") from None
            time.sleep(0.2)
