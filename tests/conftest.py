"""Shared fixtures. Each fixture is small and named for what it gives; add new ones in their own block."""
from __future__ import annotations

import pytest

from orchestrator.schema import JobConfig


# ---------------------------------------------------------------- tiny training jobs (CPU, seconds)


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory):
    """Where the tiny synthetic ImageFolder is written (on first use, by orchestrator.data)."""
    return tmp_path_factory.mktemp("synthetic") / "tiny"


def set_dotted(cfg: JobConfig, key: str, value) -> None:
    *path, leaf = key.split(".")
    node = cfg
    for part in path:
        node = getattr(node, part)
    if not hasattr(node, leaf):
        raise KeyError(key)  # a typo in a test must not silently do nothing
    setattr(node, leaf, value)


@pytest.fixture
def tiny_job(tiny_data_root):
    """Factory: a JobConfig for a 2-step resnet_tiny run on 16-32 px synthetic data; dotted overrides.

        cfg = tiny_job(**{"method.name": "san", "method.meta_hidden": 8})
    """
    def make(**overrides) -> JobConfig:
        cfg = JobConfig()
        defaults = {
            "model.backbone": "resnet_tiny", "model.small_input": True, "model.width": 8,
            "method.name": "rsnet",
            "data.root": str(tiny_data_root), "data.num_classes": 10, "data.resolutions": [32, 24, 16],
            "data.loader_workers": 0,
            "data.synthetic.num_train": 40, "data.synthetic.num_val": 20,
            "data.synthetic.min_size": 32, "data.synthetic.max_size": 40,
            "train.epochs": 1, "train.batch_size": 8, "train.max_steps_per_epoch": 2, "train.lr": 0.05,
            "eval.batch_size": 8, "eval.max_batches": 1, "eval.calib_batches": 1,
            "eval.test_resolutions": [40, 32, 28, 16],
        }
        for key, value in {**defaults, **overrides}.items():
            set_dotted(cfg, key, value)
        return cfg.validate()
    return make
