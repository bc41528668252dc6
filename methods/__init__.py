"""Training methods; importing this package registers all of them in ``METHODS``."""
from . import individual, parallel, rsnet, san  # noqa: F401  (registration side effect)
from .base import FIXED, METHODS, EvalMode, LossOutput, Method, build_method

__all__ = ["METHODS", "Method", "EvalMode", "LossOutput", "FIXED", "build_method"]
