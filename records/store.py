"""The MLflow tracking store: which URI, whether it can be used, and the embedded SQLite store's creation.

The embedded default store is SQLite at ``<project>/.resolab/mlflow.db`` (``resolve_tracking_uri`` makes
its path absolute, since Ray workers change directory); its artifacts live beside it. Only the suite
driver creates the database and experiments; workers get ids. A shared store is an ``mlflow server``
(http://…), or a PostgreSQL database named directly (postgresql://…, through psycopg 3).

Every command that reads or writes the store checks it first (``check_store``): MLflow's own client
retries an unreachable server for about four minutes, and a database it cannot connect to for about
two, then fails with a page of traceback. Only the standard library at import time, so a command can
check before it loads torch, Ray or MLflow.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from jobspec import resolab_home

SQLITE_SCHEME = "sqlite:///"
FIX = "fix --tracking-uri / MLFLOW_TRACKING_URI, or leave both unset to use the project's SQLite file"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or opened; the message names the URI and the fix."""


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite tracking URI; None for any other kind of store."""
    return Path(uri[len(SQLITE_SCHEME):]) if uri.startswith(SQLITE_SCHEME) else None


def sqlite_uri(db: Path | str) -> str:
    return f"{SQLITE_SCHEME}{db}"


def default_tracking_uri() -> str:
    return sqlite_uri(resolab_home() / "mlflow.db")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the project's SQLite file (made absolute:
    Ray workers change directory)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    db = sqlite_file(uri)
    if db is not None and not db.is_absolute():
        uri = sqlite_uri(db.resolve())
    if "://" not in uri:  # a bare path means a SQLite file
        uri = sqlite_uri(Path(uri).resolve())
    return uri


def redacted(text: str) -> str:
    """A URI, or a command line with URIs in it, as printed or recorded: each password in a URI
    (postgresql://user:PASSWORD@host/db) shown as ***."""
    return re.sub(r"([a-z][a-z0-9+.-]*://[^/:@\s]*):[^/@\s]*@", r"\1:***@", text, flags=re.IGNORECASE)


def is_database(uri: str) -> bool:
    """A PostgreSQL database named directly (postgresql://, postgresql+DRIVER://), not behind a server."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() == "postgresql" and "://" in uri


def artifact_location(uri: str) -> str | None:
    """Artifacts of the embedded SQLite store live beside it (not in ./mlruns of whatever directory
    the command ran in); those of a database named directly, which has no place for files, in the
    project's .resolab/artifacts; a tracking server decides for itself."""
    db = sqlite_file(uri)
    if db is not None:
        return (db.parent / "artifacts").resolve().as_uri()
    return (resolab_home() / "artifacts").resolve().as_uri() if is_database(uri) else None


def store_is_empty(uri: str) -> bool:
    """A SQLite store that does not exist yet is empty; nothing need create it just to say so."""
    db = sqlite_file(uri)
    return db is not None and not db.exists()


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) URI, that an MLflow server answers its /health within ``timeout`` seconds; for a
    PostgreSQL URI, that the database takes a connection (``check_database``); any other URI passes
    (``check_tracking`` opens those)."""
    if is_database(uri):
        check_database(uri, timeout)
        return
    if not is_server(uri):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, unknown host, HTTP 4xx/5xx
        reason = getattr(exc, "reason", None) or exc
        raise TrackingUnavailable(f"cannot reach the MLflow tracking server at {uri} ({reason}). "
                                  f"Start it, {FIX}.") from None
    if status != 200:
        raise TrackingUnavailable(f"the MLflow tracking server at {uri} answered /health with HTTP {status}. "
                                  f"Check the server, {FIX}.")
    check_backend(uri, timeout)


# The cheapest request that reads the server's backend store.
BACKEND_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def check_backend(uri: str, timeout: float) -> None:
    """That the server can read its backend store: its /health says OK even when its database is down,
    and then every request hangs or fails, and MLflow's client retries each for minutes. An HTTP 4xx
    passes (a server with authentication refuses this unauthenticated probe, yet works)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + BACKEND_PROBE, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:  # timed out, connection reset
        reason = str(getattr(exc, "reason", None) or exc)
    raise TrackingUnavailable(f"the MLflow tracking server at {uri} is up but cannot read its backend store "
                              f"(a query of its experiments: {reason}). Check the server's database (its "
                              f"--backend-store-uri) and its log, or {FIX}.")


def check_database(uri: str, timeout: float = 5.0) -> None:
    """That the PostgreSQL database of ``uri`` takes a connection within ``timeout`` seconds (libpq's
    connect_timeout: a host that never answers fails as fast as a closed port); its driver is checked
    first. SQLAlchemy and the driver load here, not MLflow."""
    from sqlalchemy import create_engine, exc as sa_exc
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    shown = redacted(uri)
    try:
        url = make_url(uri)
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        raise TrackingUnavailable(missing_driver(shown, url.get_driver_name(), exc.name)) from None
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as exc:
        raise TrackingUnavailable(f"the tracking URI {shown} is no database URI SQLAlchemy knows ({exc}); write it "
                                  "as postgresql://USER@HOST:PORT/DATABASE, or fix --tracking-uri") from None
    # psycopg2 and psycopg 3 pass connect_timeout to libpq, which counts whole seconds and at least 2.
    libpq = url.get_driver_name() in ("psycopg2", "psycopg")
    connect_args = {"connect_timeout": max(2, round(timeout))} if libpq else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except sa_exc.DBAPIError as exc:
        said = str(exc.orig or exc).strip()
        reason = said.splitlines()[0] if said else type(exc).__name__
        raise TrackingUnavailable(database_refused(shown, url, reason)) from None
    finally:
        engine.dispose()


def missing_driver(shown: str, driver: str, module: str | None) -> str:
    if driver == "psycopg":  # SQLAlchemy 2.1 reads a plain postgresql:// as postgresql+psycopg:// (psycopg 3)
        return (f"the tracking URI {shown} needs psycopg 3, SQLAlchemy's driver for postgresql://, which is not "
                "installed: pip install -e \".[postgres]\"")
    return (f"the tracking URI {shown} needs the database driver {driver} (Python module {module}), which is not "
            "installed: install it, or write postgresql://… for psycopg 3 (pip install -e \".[postgres]\")")


def database_refused(shown: str, url, reason: str) -> str:
    """One line for a connection PostgreSQL (or the network) refused: what libpq said, and the fix."""
    reason = re.sub(r'^(connection failed: )?connection to server at "[^"]*", port \d+ failed: ', "", reason)
    reason = re.sub(r"^FATAL:\s+", "", reason)
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    if "password" in reason:
        fix = ("give the user's right password: in the URI (postgresql://USER:PASSWORD@HOST:PORT/"
               "DATABASE), or, kept out of the command line, in PGPASSWORD or ~/.pgpass")
    elif "does not exist" in reason and "database" in reason:
        fix = (f"create it (createdb -h {url.host or 'localhost'} -p {url.port or 5432} -U {url.username or 'USER'} "
               f"{url.database}) or fix the database name in --tracking-uri; MLflow creates its tables itself")
    elif any(s in reason for s in ("refused", "timeout expired", "could not translate host name", "No route")):
        fix = f"start PostgreSQL on {where}, or fix the host and port in --tracking-uri / MLFLOW_TRACKING_URI"
    else:
        fix = FIX
    return f"cannot connect to the PostgreSQL tracking store {shown} ({reason}); {fix}"


def check_tracking(uri: str, timeout: float = 5.0, opening=contextlib.nullcontext) -> None:
    """Raise TrackingUnavailable unless the store can be used: a server answers, or a store of another
    kind (a SQLite file, a PostgreSQL database) opens. ``opening(uri)`` is entered around that first
    opening (``check_store`` passes the lock that serialises schema creation)."""
    if is_server(uri):
        check_server(uri, timeout)
        return
    if is_database(uri):
        check_database(uri, timeout)  # seconds, where MLflow's own engine retries for about two minutes
    from mlflow.tracking import MlflowClient  # here: a server's check needs no MLflow at all

    try:
        with opening(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 — any failure here means "unusable store"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrackingUnavailable(f"cannot open the MLflow tracking store {redacted(uri)} ({first_line}); "
                                  f"{FIX}.") from None


# Any fixed number: the key of the PostgreSQL advisory lock that resolab's commands take around MLflow's
# first opening of a database.
SCHEMA_LOCK_KEY = 0x7265736F6C6162  # "resolab"


@contextlib.contextmanager
def store_creation_lock(uri: str):
    """Serialise the first opening of a store: MLflow's schema migration races when several processes
    create one store at once (SQLite: "table already exists"; PostgreSQL: a duplicate key in pg_type).
    A SQLite file is locked with flock and its creation made all-or-nothing (``create_store``); a
    PostgreSQL database with an advisory lock, which the server drops with the connection if we die."""
    if is_database(uri):
        with advisory_lock(uri):
            yield
        return
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(db.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not db.exists():
                create_store(db)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def advisory_lock(uri: str):
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(uri, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("select pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("select pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()


def create_store(db: Path) -> None:
    """A new SQLite store, built beside ``db`` and renamed into place once MLflow has migrated it fully.
    MLflow creates the schema in dozens of steps that are not one transaction: a first command
    interrupted among them in place (Ctrl-C in its first seconds) would leave a store that neither
    resolab nor `mlflow db upgrade` can open. Interrupted here, it leaves nothing at ``db``."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # here: this module loads no MLflow

    partial = db.with_name(db.name + ".partial")
    leftovers = (partial, partial.with_name(partial.name + "-journal"))
    try:
        for path in leftovers:  # of a creation killed outright (kill -9); the lock says nobody else builds
            path.unlink(missing_ok=True)
        store = SqlAlchemyStore(sqlite_uri(partial), artifact_location(sqlite_uri(db)))
        store.engine.dispose()
        os.replace(partial, db)
    finally:
        for path in leftovers:
            path.unlink(missing_ok=True)


def broken_store(db: Path) -> str | None:
    """Why the SQLite store ``db``, which exists but MLflow could not open, cannot be used and what to do,
    in one line; None when it is no SQLite database at all (then the URI is what is wrong)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
            runs = connection.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
            revision = (connection.execute("select version_num from alembic_version").fetchone()
                        if "alembic_version" in tables else None)
    except sqlite3.DatabaseError:
        return None
    if not runs:
        return (f"the MLflow store {db} was left half-created (its first schema migration was interrupted) "
                f"and holds no runs: delete it (rm {db}) and run the command again, which creates a new one")
    return (f"MLflow cannot open the store {db}, which holds {runs} run{'s' if runs > 1 else ''} (schema revision "
            f"{revision[0] if revision else 'unknown'}); keep it: back it up (cp {db} {db}.bak), then migrate "
            f"it with `mlflow db upgrade {sqlite_uri(db)}`")


def check_store(uri: str, timeout: float = 5.0) -> None:
    """Fail before anything is recorded if the tracking store cannot be reached or opened
    (TrackingUnavailable, one line). A new SQLite store is created whole under ``store_creation_lock``;
    one that exists but does not open is explained, not blamed on a --tracking-uri the user never set."""
    try:
        check_tracking(uri, timeout, opening=store_creation_lock)
    except TrackingUnavailable:
        db = sqlite_file(uri)
        why = broken_store(db) if db is not None and db.is_file() else None
        if why is None:
            raise
        raise TrackingUnavailable(why) from None
