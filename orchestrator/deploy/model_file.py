"""The resolab model file: one trained switchable model, config plus weights, and nothing else.

    {"format": "resolab-model/1", "config": JobConfig.to_dict(), "num_classes": N,
     "model": state dict, "source": {"kind": "reference-san" | "job", ...}}

Everything in it is a tensor, a number, a string, a list or a dict, so it loads with
``torch.load(weights_only=True)`` (no pickled classes run on loading). ``resolab import-reference``
writes it; ``export``, ``pick`` and ``evaluate-model`` read it, and also read a job's final
checkpoint (``<storage>/<suite>/jobs/<job>-<hash>/checkpoint.pt``), which holds the same two fields
that matter here: ``config`` and ``model``.

Every file this module (and export) writes goes through ``write_out`` (``records.files.atomic_write``):
a temporary file in the target's directory, renamed into place only once it is complete, so an error
never leaves a partial output behind.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from jobspec import ConfigError, JobConfig
from methods import Method, build_method
from records.files import atomic_write

MODEL_FORMAT = "resolab-model/1"
MODEL_SOURCES = ("a resolab model file (resolab import-reference writes one), a job's checkpoint.pt, or a finished "
                 "job's MLflow run id")


class ModelFileError(ValueError):
    """A model file (or source) that cannot be used; the message names the file and the fix."""


@dataclass
class LoadedModel:
    config: JobConfig
    net: torch.nn.Module  # MultiResolutionNet, eval mode, on the CPU
    method: Method
    num_classes: int
    source: dict = field(default_factory=dict)  # where the weights came from (file, run id, reference checkpoint)


def check_out(path: Path, force: bool = False) -> Path:
    """``--out`` of a file to write, checked before any work: not a directory, not an existing file
    unless ``force``, and in a place where a file can be created (tried: a temporary file is made and
    removed in the nearest existing folder, since permission bits do not tell, e.g. for root on /sys)."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"--out {path} is a directory; give a file path such as {path / 'model.pt'}")
    if path.exists() and not force:
        raise ModelFileError(f"--out {path} exists; pass --force to replace it, or choose another --out")
    check_creatable(path.parent, path)
    return path


def check_creatable(folder: Path, out: Path) -> None:
    """A file can be made in ``folder`` (or, where it does not exist yet, in its nearest existing parent)."""
    base = Path(folder)
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ModelFileError(f"--out {out}: {base} is a file, not a directory; choose another --out")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".resolab-probe-")
    except OSError as exc:
        raise ModelFileError(f"--out {out}: cannot create a file in {base} ({exc.strerror or exc}); "
                             "choose another --out") from None
    os.close(fd)
    os.unlink(probe)


def write_out(path: Path, write: Callable[[Path], object]) -> Path:
    """``records.files.atomic_write`` for a command's --out: a file system error is one line naming it."""
    try:
        return atomic_write(path, write)
    except OSError as exc:
        raise ModelFileError(f"cannot write {path} ({exc.strerror or exc}); choose another --out") from None


def build_model(config: JobConfig, num_classes: int) -> tuple[Method, torch.nn.Module]:
    method = build_method(config.method, config.model, config.data.resolutions)
    return method, method.build(num_classes)


def save_model_file(path: Path, config: JobConfig, net: torch.nn.Module, num_classes: int, source: dict) -> Path:
    payload = {"format": MODEL_FORMAT, "config": config.to_dict(), "num_classes": int(num_classes),
               "model": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "source": dict(source)}
    return write_out(path, lambda tmp: torch.save(payload, tmp))


def _classes_from_weights(state: dict) -> int:
    """The classifier's outputs: the last 2-D weight of the state dict (the FC of every backbone;
    RS-Net's alpha, registered after it, is 1-D)."""
    for key in reversed(list(state)):
        if key.endswith("weight") and getattr(state[key], "ndim", 0) == 2:
            return int(state[key].shape[0])
    raise ModelFileError("no classifier weight found in the state dict")


def _unsafe_globals(path: Path) -> str:
    """The classes a torch file pickles beyond what weights_only loading allows, read without running them."""
    try:
        return ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown classes"
    except Exception:  # noqa: BLE001 — only a hint in an error message
        return "unknown classes"


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (torch.jit.save, resolab export): a zip holding constants.pkl, as torch tells it."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def check_checkpoint_path(path: Path, expected: str = MODEL_SOURCES) -> None:
    """The problems a path can have before it is read as a torch file, each said with what to give instead."""
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory; give {expected}")
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file; give {expected}")
    if _is_torchscript(path) or path.suffix.lower() == ".onnx":
        kind = "an ONNX" if path.suffix.lower() == ".onnx" else "a TorchScript"
        raise ModelFileError(f"{path} is {kind} file (a plain CNN, as resolab export writes one), not a checkpoint "
                             f"with weights and config; give {expected}")


def read_payload(path: Path, expected: str = MODEL_SOURCES) -> dict:
    path = Path(path)
    check_checkpoint_path(path, expected)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise ModelFileError(f"{path} cannot be read as a torch file, it is truncated or not a checkpoint "
                                 f"({str(exc).splitlines()[0] if str(exc) else 'unpickling failed'}); copy or write it again") from None
        # Loading arbitrary pickled objects runs code; we only ever load tensors and plain containers, and
        # the way out we name is torch's allow-list of the classes the file holds, never weights_only=False.
        raise ModelFileError(f"{path} holds Python objects other than tensors ({_unsafe_globals(path)}), which are "
                             "not loaded here (safe loading, weights_only=True). If you trust those classes, keep "
                             "only the weights: load the file with torch.load(..., weights_only=True) inside "
                             "`with torch.serialization.safe_globals([<those classes>]):`, torch.save its "
                             "'state_dict' to weights.pth, and import weights.pth") from None
    except Exception as exc:  # noqa: BLE001 — torch raises many kinds (zip reader, unpickler) for a bad file
        first = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).split(". ")[0][:160]
        raise ModelFileError(f"{path} cannot be read as a torch file, it is truncated or not a checkpoint ({first}); "
                             "copy or write it again") from None
    if not isinstance(payload, dict):
        raise ModelFileError(f"{path} holds a {type(payload).__name__}, not a resolab model file or checkpoint")
    return payload


def load_model(path: Path, source: dict | None = None, expected: str = MODEL_SOURCES) -> LoadedModel:
    """A model file or a job checkpoint, built and loaded (strict: every weight must fit). ``expected``:
    what the command takes, said when ``path`` is not such a file."""
    payload = read_payload(path, expected)
    if "config" not in payload or "model" not in payload:
        raise ModelFileError(f"{path} is not a resolab model file or job checkpoint (it has no config and model); "
                             "for the papers' released weights use `resolab import-reference`")
    try:
        config, dropped = JobConfig.parse_saved(payload["config"])
    except ConfigError as exc:
        raise ModelFileError(f"{path}: its config is not valid for this version of resolab ({exc})") from None
    state = payload["model"]
    num_classes = int(payload.get("num_classes") or config.data.num_classes or _classes_from_weights(state))
    method, net = build_model(config, num_classes)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ModelFileError(f"{path}: its weights do not fit its config "
                             f"({config.model.backbone}/{config.method.name}): {' '.join(lines[1:4])}") from None
    net.eval()
    info = {"file": str(Path(path).resolve()), **(payload.get("source") or {}), **(source or {})}
    if dropped:  # settings of an earlier resolab that this one no longer has; the weights fit without them
        info["dropped_config_keys"] = dropped
    return LoadedModel(config, net, method, num_classes, info)
