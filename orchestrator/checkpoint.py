"""Checkpoints: everything needed to continue a job exactly, written atomically, loaded with weights_only=True.

A checkpoint carries the job's config and its hash; resuming into a job with a different hash (another
config, another method) is refused instead of silently training an incompatible model.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"


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
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / CHECKPOINT_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / CHECKPOINT_FILE


def copy(source_dir: Path, directory: Path) -> Path:
    """Copy a written checkpoint file into ``directory`` atomically (bytes only: no re-serialising)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(Path(source_dir) / CHECKPOINT_FILE, tmp)
        os.replace(tmp, directory / CHECKPOINT_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / CHECKPOINT_FILE


def load(directory: Path, expected_hash: str, expected_method: str) -> dict:
    path = Path(directory) / CHECKPOINT_FILE
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("method") != expected_method or payload.get("config_hash") != expected_hash:
        raise CheckpointMismatch(
            f"refusing to resume from {path}: it was written by method {payload.get('method')!r} with config "
            f"hash {payload.get('config_hash')}, but this job is method {expected_method!r} with hash "
            f"{expected_hash}. Use a fresh output directory (or delete that checkpoint) to train this config.")
    return payload
