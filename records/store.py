"""Is the MLflow tracking store there? Every command that reads or writes it asks first: MLflow's own
client retries an unreachable server for about four minutes and then fails with a page of traceback.

Here rather than in ``orchestrator`` because ``analysis/make_tables.py`` checks too and may not import
the orchestrator. Only the standard library at import time, so a command can check before it loads
torch, Ray or MLflow.
"""
from __future__ import annotations

import contextlib
import urllib.error
import urllib.request

FIX = "fix --tracking-uri / MLFLOW_TRACKING_URI, or leave both unset to use the project's SQLite file"


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or opened; the message names the URI and the fix."""


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
    kind (a SQLite file) opens. ``opening(uri)`` is entered around that first opening (the orchestrator
    passes its lock that serialises SQLite schema creation)."""
    if is_server(uri):
        check_server(uri, timeout)
        return
    from mlflow.tracking import MlflowClient

    try:
        with opening(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 — any failure here means "unusable store"
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrackingUnavailable(f"cannot open the MLflow tracking store {uri} ({first_line}); {FIX}.") from None
