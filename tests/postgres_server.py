"""A real PostgreSQL on 127.0.0.1 for tests, and an ``mlflow server`` on top of it, each stopped by its PID.

``postgres_cluster()`` makes a database cluster with ``initdb`` in a new folder and starts it with
``pg_ctl`` on a free port, password authentication (scram-sha-256) on TCP only. PostgreSQL refuses to
run as root, so under root (CI) its programs run as the ``postgres`` user Debian's package creates,
and the folder is handed to that user; anyone else runs them as themselves. Debian installs the
programs in /usr/lib/postgresql/<version>/bin, which is not on PATH: they are looked for there too.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

USER, PASSWORD = "resolab", "pg-secret-7"  # the cluster's superuser (initdb -U) and its password
INSTALL = "apt-get install postgresql"


def pg_bin(program: str) -> str | None:
    """``initdb``/``pg_ctl``: from PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(program)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return str(versions[-1]) if versions else None


def runuser() -> str | None:
    """util-linux's runuser (in /usr/sbin, which a non-login root shell may not have on PATH)."""
    return shutil.which("runuser") or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)),
                                           None)


def missing() -> str | None:
    """Why no PostgreSQL can be started here (a reason that names the fix), or None."""
    if not (pg_bin("initdb") and pg_bin("pg_ctl")):
        return f"needs PostgreSQL's initdb and pg_ctl ({INSTALL})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return f"runs PostgreSQL as the 'postgres' user, which does not exist ({INSTALL} creates it)"
        if not runuser():
            return "needs runuser (util-linux) to run PostgreSQL as the 'postgres' user"
    return None


@dataclass
class Postgres:
    port: int
    folder: Path  # owned by the server's user: data/ (the cluster), server.log, the local socket

    def uri(self, database: str = "postgres", password: str | None = PASSWORD, port: int | None = None) -> str:
        """A tracking URI (SQLAlchemy reads postgresql:// as psycopg 3, the driver of the postgres extra)."""
        secret = f":{password}" if password is not None else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{port or self.port}/{database}"

    def createdb(self, name: str) -> str:
        """A new, empty database; its tracking URI."""
        _as_owner([pg_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name],
                  env={"PGPASSWORD": PASSWORD})
        return self.uri(name)

    def start(self) -> None:
        """Start the server on 127.0.0.1 only (-F: no fsync, a throwaway cluster); its socket in the folder."""
        _as_owner([pg_bin("pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "server.log"), "-w",
                   "-t", "60", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F", "start"])

    def stop(self) -> None:
        """Stop the server by its postmaster's PID: SIGINT (PostgreSQL's fast shutdown), then SIGKILL."""
        try:
            pid = int((self.folder / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return  # not running
        for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)


def _as_owner(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    prefix = [runuser(), "-u", "postgres", "--"] if os.geteuid() == 0 else []
    result = subprocess.run(prefix + command, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=90)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result


@contextlib.contextmanager
def postgres_cluster():
    """A started PostgreSQL cluster (``Postgres``), stopped and deleted at exit, also when a test failed."""
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="resolab-pg-"))
    pg = Postgres(free_port(), folder)
    try:
        (folder / "pwfile").write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            for path in (folder, folder / "pwfile"):
                os.chown(path, postgres.pw_uid, postgres.pw_gid)
        # -N: no fsync while it writes the cluster (seconds saved); passwords checked on every TCP connection.
        _as_owner([pg_bin("initdb"), "-D", str(folder / "data"), "-U", USER, "--auth=scram-sha-256",
                   f"--pwfile={folder / 'pwfile'}", "-N", "-E", "UTF8"])
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
