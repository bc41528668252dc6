"""Where the project keeps its state: the repository root and ``.resolab/``.

Every layer above needs these, so they live at the bottom with the config vocabulary; the MLflow store's
URI is ``records.store``'s.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolab_home() -> Path:
    """Project-local state (MLflow store, synthetic data, Ray storage); RESOLAB_HOME moves it."""
    return Path(os.environ.get("RESOLAB_HOME", PROJECT_ROOT / ".resolab")).resolve()
