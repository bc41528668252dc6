"""The MLflow tracking store: which URI, whether it can be used, and the embedded SQLite store's creation.

The embedded default store is SQLite at ``<project>/.resolab/mlflow.db`` (``resolve_tracking_uri`` makes
its path absolute, since Ray workers change directory); its artifacts live beside it. Only the suite
driver creates the database and experiments; workers get ids.

Every command that reads or writes the store checks it first (``check_store``): MLflow's own client
retries an unreachable server for about four minutes and then fails with a page of traceback. Only
the standard library at import time, so a command can check before it loads torch, Ray or MLflow.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
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


def artifact_location(uri: str) -> str | None:
    """Artifacts of the embedded SQLite store live beside it (not in ./mlruns of whatever directory
    the command ran in); a tracking server decides for itself."""
    db = sqlite_file(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db is not None else None


def store_is_empty(uri: str) -> bool:
    """A SQLite store that does not exist yet is empty; nothing need create it just to say so."""
    db = sqlite_file(uri)
    return db is not None and not db.exists()


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) URI, that an MLflow server answers its /health within ``timeout`` seconds;
    any other URI passes (``check_tracking`` opens those)."""
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


def check_tracking(uri: str, timeout: float = 5.0, opening=contextlib.nullcontext) -> None:
    """Raise TrackingUnavailable unless the store can be used: a server answers, or a store of another
    kind (a SQLite file) opens. ``opening(uri)`` is entered around that first opening (``check_store``
    passes the lock that serialises SQLite schema creation)."""
    if is_server(uri):
        check_server(uri, timeout)
        return
    from mlflow.tracking import MlflowClient  # here: a server's check needs no MLflow at all

    try:
        with opening(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 — any failure here means "unusable store"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrackingUnavailable(f"cannot open the MLflow tracking store {uri} ({first_line}); {FIX}.") from None


@contextlib.contextmanager
def store_creation_lock(uri: str):
    """Serialise the first opening of a SQLite store (MLflow's schema migration races when several
    processes create one database file at once), and make that creation all-or-nothing (``create_store``)."""
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
