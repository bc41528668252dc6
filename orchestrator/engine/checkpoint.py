"""Checkpoints: everything needed to continue a job exactly, written atomically, loaded with weights_only=True.

A checkpoint carries the job's config and its hash; resuming into a job with a different hash (another
config, another method) is refused instead of silently training an incompatible model. A job that
trains the same model and only evaluates it differently reads another job's final checkpoint without
resuming it (``orchestrator.engine.job.evaluate``).
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from records import storage
from records.files import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"
# In an evaluation copy (another job's final checkpoint relabelled as this job's, which earlier versions
# made for an evaluation-only job): the directory of the checkpoint whose model it carries.
EVALUATED_FROM_KEY = "evaluated_from"


class CheckpointMismatch(RuntimeError):
    pass


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save(directory: Path, payload: dict) -> Path:
    """Write ``directory/checkpoint.pt`` atomically: a crash mid-write leaves the previous file intact."""
    return atomic_write(Path(directory) / CHECKPOINT_FILE, lambda tmp: torch.save(payload, tmp))


def copy(source_dir: Path, directory: Path) -> Path:
    """Copy a written checkpoint file into ``directory`` whole (bytes only: no re-serialising)."""
    target = Path(directory) / CHECKPOINT_FILE
    storage.upload(Path(source_dir) / CHECKPOINT_FILE, str(target))
    return target


def load(directory: Path, expected_hash: str, expected_method: str) -> dict:
    path = Path(directory) / CHECKPOINT_FILE
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("method") != expected_method or payload.get("config_hash") != expected_hash:
        raise CheckpointMismatch(
            f"refusing to resume from {path}: it was written by method {payload.get('method')!r} with config "
            f"hash {payload.get('config_hash')}, but this job is method {expected_method!r} with hash "
            f"{expected_hash}. Use a fresh output directory (or delete that checkpoint) to train this config.")
    return payload


def final_checkpoint(location: str | Path) -> dict | None:
    """The small fields of ``location/checkpoint.pt`` (epoch, config, config_hash, method and, for an
    evaluation copy, evaluated_from) when it holds the last epoch of its job's training; None when the
    file is missing, unreadable or mid-training. ``location``: a folder, or an object-store URI (the file
    is copied here to be read); on a disk the tensors are memory-mapped, not read."""
    try:
        with storage.local_folder(str(location), [CHECKPOINT_FILE]) as folder:
            if folder is None:
                return None
            payload = torch.load(folder / CHECKPOINT_FILE, map_location="cpu", weights_only=True, mmap=True)
            epochs = (payload.get("config") or {}).get("train", {}).get("epochs")
            if epochs is None or int(payload.get("epoch", -1)) != int(epochs) - 1:
                return None
            return {k: payload.get(k) for k in ("epoch", "config", "config_hash", "method", EVALUATED_FROM_KEY)}
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
        return None
