"""Training methods: one class per method, listed with its options in ``methods.catalog``.

The names below load on first use, so that ``methods.catalog`` (read by the config schema) can be
imported without torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "METHODS": "catalog", "Options": "catalog", "Method": "base", "EvalMode": "base", "LossOutput": "base",
    "FIXED": "base", "build_method": "base",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'methods' has no attribute {name!r}")
    return getattr(importlib.import_module(f"methods.{_EXPORTS[name]}"), name)
