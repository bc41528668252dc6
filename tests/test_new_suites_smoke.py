"""The suites of RS-Nets Tables 4 and 6 and Figs. 3 and 5 run for real at their smoke setting, and
their builders print from what the runs recorded (GAP quantiles for Fig. 3, changes over each I-Net
for Fig. 5)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from analysis.make_tables import main as make_tables
from jobspec import load_suite
from orchestrator.cli.main import main as cli_main

REPO = Path(__file__).resolve().parent.parent
SUITES = ("rsnets_table4", "rsnets_table6", "rsnets_fig3", "rsnets_fig5")


@pytest.mark.slow
def test_new_suites_smoke_run_and_their_tables_print(local_ray, home, tmp_path, capsys, empty_db):
    shutil.copy(empty_db, tmp_path / "mlflow.db")  # migrated already
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for stem in SUITES:
        path = REPO / "experiments" / f"{stem}.yaml"
        assert cli_main(["run", str(path), "--smoke", "--tracking-uri", uri]) == 0, stem
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(stem)
        runs = client.search_runs([experiment.experiment_id], "tags.`resolab.kind` = 'job'")
        assert len(runs) == len(load_suite(path, smoke=True).jobs)
        assert all(run.info.status == "FINISHED" for run in runs), stem
    capsys.readouterr()
    for stem in SUITES:
        assert make_tables([stem, "--tracking-uri", uri, "--no-log"]) == 0, stem
        out = capsys.readouterr().out
        assert "missing: every model" not in out, stem
    assert make_tables(["rsnets_fig3", "--tracking-uri", uri, "--no-log"]) == 0
    fig3 = capsys.readouterr().out
    assert "| I-32 at 32 (train) |" in fig3 and "| Parallel {32, 16} at 16 (test) |" in fig3
