"""Where the project keeps its state: the repository root, ``.resolab/`` and the MLflow store URI.

Every layer above needs these (the orchestrator writes the store, analysis reads it), so they live
at the bottom with the config vocabulary.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolab_home() -> Path:
    """Project-local state (MLflow store, synthetic data, Ray storage); RESOLAB_HOME moves it."""
    return Path(os.environ.get("RESOLAB_HOME", PROJECT_ROOT / ".resolab")).resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{resolab_home() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the project's SQLite file (made absolute:
    Ray workers change directory)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:  # a bare path means a SQLite file
        uri = f"sqlite:///{Path(uri).resolve()}"
    return uri
