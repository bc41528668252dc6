"""Which logged runs are seeds of one model: the grouping the tables print mean ± std over."""
from __future__ import annotations

import pandas as pd

from analysis.tables.runs import prepare_runs, seed_groups
from jobspec import JobConfig, flatten, param_value


def run_row(run_id: str, start: int, drop_keys=(), **overrides) -> dict:
    cfg = JobConfig.parse({"model": {"backbone": "mobilenet_v2"}, "method": {"name": "rsnet"}})
    params = {k: param_value(v) for k, v in flatten(cfg).items() if k not in drop_keys}
    params.update({k: param_value(v) for k, v in overrides.items()})
    return {"run_id": run_id, "start_time": start, "status": "FINISHED", "tags.resolab.kind": "job",
            **{f"params.{k}": v for k, v in params.items()}}


def groups_of(*rows) -> list[list[str]]:
    return [sorted(g["run_id"]) for g in seed_groups(prepare_runs(pd.DataFrame(rows)))]


def test_seeds_group_and_what_the_hash_ignores_does_not_split_them():
    assert groups_of(run_row("a", 1), run_row("b", 2, **{"train.seed": 1, "tag": "x", "resources.workers": 4,
                                                          "method.meta_hidden": 8})) == [["a", "b"]]


def test_a_hashed_setting_splits_them():
    assert groups_of(run_row("a", 1), run_row("b", 2, **{"train.lr": 0.05})) == [["b"], ["a"]]


def test_runs_from_before_model_dropout_existed_are_not_seeds_of_the_dropout_free_model():
    # MobileNetV2 runs logged before model.dropout was a key trained with torchvision's Dropout(0.2).
    old = run_row("old", 1, drop_keys=("model.dropout",))
    assert groups_of(old, run_row("new", 2)) == [["new"], ["old"]]
    assert groups_of(old, run_row("explicit", 2, **{"model.dropout": 0.2})) == [["explicit", "old"]]
