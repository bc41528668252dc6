"""What every resolab subcommand shares: the user-error type, its one-line report, and common options.

An error the user can fix (a config typo, missing data, an unreachable tracking store, a bad option)
ends the command with one line on stderr and exit status 2; ``resolab --debug`` shows its traceback.
"""
from __future__ import annotations

import argparse


class UsageError(ValueError):
    """A command-line value that cannot work; the message names the option and the fix."""


def user_error(exc: Exception) -> str | None:
    """The reason for an error the user can fix, in one line; None for any other error (a bug, whose
    traceback is shown). Checked in this order so that an early error (a config typo, an unreachable
    server) is reported without waiting for torch or MLflow to load."""
    from records.storage import StorageUnavailable
    from records.store import TrackingUnavailable
    from jobspec import ConfigError

    if isinstance(exc, ConfigError):
        reason = f"config error: {exc}"
    elif isinstance(exc, (TrackingUnavailable, StorageUnavailable, UsageError)):
        reason = str(exc)
    else:
        # MLflow and torch (DatasetError, ModelFileError) load only when an error needs them.
        from mlflow.exceptions import MlflowException
        from orchestrator.cluster.ray_address import ClusterUnavailable
        from orchestrator.data.loaders import DatasetError
        from orchestrator.deploy.model_file import ModelFileError

        if isinstance(exc, (DatasetError, ModelFileError, ClusterUnavailable)):
            reason = str(exc)
        elif isinstance(exc, MlflowException):
            reason = f"MLflow: {exc.message}"
        else:
            return None
    return " ".join(line.strip() for line in reason.splitlines() if line.strip())


def check_device(name: str | None) -> str | None:
    """--device, checked before any data is read."""
    if name is None:
        return None
    import torch  # only a command given --device loads torch here

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a torch device; use cpu or cuda (cuda:N for GPU N)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: torch finds {torch.cuda.device_count()} CUDA GPU(s) here; use --device "
                         "cpu, or leave --device unset to use a GPU when there is one")
    return name


def check_server(tracking_uri: str | None) -> None:
    """An unreachable tracking server fails here in about a second, before torch, Ray and MLflow load
    (each command checks its store again, fully, before it uses it)."""
    from records.store import check_server as check, resolve_tracking_uri

    check(resolve_tracking_uri(tracking_uri))


def add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override, repeatable")
