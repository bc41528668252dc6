"""A suite's search on a real local Ray with a real MLflow store: ASHA stops samples early, a rerun trains
nothing, `--resume-stopped` trains them on, `repeat` reruns the winner, and make_tables names it."""
from __future__ import annotations

import yaml
from mlflow.tracking import MlflowClient

from analysis.make_tables import main as make_tables
from jobspec import load_suite
from orchestrator.cli.main import main as cli_main
from orchestrator.cluster.status import suite_status
from orchestrator.cluster.suite import RunOptions, run_suite
from records import names
from records.search_runs import SearchRun, best_samples

# The suite: RS-Net on small built-in data, 4 epochs, 6 samples of lr and weight decay, ASHA.
SUITE = {
    "name": "search_rsnet",
    "job": {"model": {"backbone": "resnet_tiny", "small_input": True, "width": 8, "zero_init_residual": True},
            "method": {"name": "rsnet"},
            "data": {"resolutions": [24, 16], "loader_workers": 0,
                     "synthetic": {"num_train": 64, "num_val": 32, "min_size": 24, "max_size": 32}},
            "train": {"epochs": 4, "batch_size": 32, "warmup_epochs": 0},
            "eval": {"batch_size": 32, "test_resolutions": [24, 16], "calibrate": False},
            "resources": {"workers": 1, "cpus_per_worker": 1}},
    "search": {"space": {"train.lr": {"loguniform": [0.003, 0.3]},
                         "train.weight_decay": {"choice": [0.0, 1.0e-4, 5.0e-4]}},
               "num_samples": 6, "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
               "metric": "acc1/mean", "mode": "max", "seed": 0},
}


def job_runs(uri: str, suite: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(suite)
    return client.search_runs([experiment.experiment_id], names.JOB_FILTER, max_results=1000)


def test_asha_search_stops_samples_early_reruns_nothing_and_names_the_best_lr(local_ray, home, tmp_path, capsys):
    uri = f"sqlite:///{home}/mlflow.db"
    path = tmp_path / "search_rsnet.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    suite = load_suite(path)
    outcome = run_suite(suite, RunOptions(tracking_uri=uri, live_interval=60))
    assert not outcome.failed and len(outcome.finished) + len(outcome.stopped) == 6 and outcome.stopped

    runs = job_runs(uri, "search_rsnet")
    assert len(runs) == 6 and all(r.info.status == "FINISHED" for r in runs)
    stopped = [r for r in runs if r.data.tags.get(names.EARLY_STOPPED)]
    stopped_ids = {r.info.run_id for r in stopped}
    assert {r.data.tags[names.JOB] for r in stopped} == set(outcome.stopped)
    for run in stopped:  # stopped after the epochs its tag says: its metrics end there, it has no matrix
        epochs = int(run.data.tags[names.EARLY_STOPPED])
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "acc1/mean")
        assert 1 <= epochs < 4 and max(m.step for m in history) + 1 == epochs
        assert not any(k.startswith("acc1/train") for k in run.data.metrics)
    for run in runs:
        if run.info.run_id not in stopped_ids:  # ran to its end: 4 epochs of compute, its matrix
            assert "acc1/train24_test16" in run.data.metrics
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "compute")
        per_epoch = history[0].value
        assert per_epoch > 0 and all(abs(m.value - (m.step + 1) * per_epoch) < 1e-9 * per_epoch for m in history)
    assert "stopped     " in suite_status(suite, uri)

    again = run_suite(load_suite(path), RunOptions(tracking_uri=uri, live_interval=60))
    assert len(again.skipped) == 6 and not again.finished and len(job_runs(uri, "search_rsnet")) == 6

    winner = best_samples(SearchRun.of_run(r) for r in runs)["rsnet-resnet_tiny"]
    best_lr = next(r for r in runs if r.info.run_id == winner.run_id).data.params["train.lr"]
    assert winner.value() == max(r.data.metrics["acc1/mean"] for r in runs if r.info.run_id not in stopped_ids)
    capsys.readouterr()
    assert make_tables(["search", "--suite", "search_rsnet", "--tracking-uri", uri, "--no-log"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| rsnet-resnet_tiny"))
    assert row.split("|")[2].strip() == best_lr

    # repeat: 2 adds the winner with one more seed; --resume-stopped trains the stopped samples to their end
    path.write_text(yaml.safe_dump({**SUITE, "search": {**SUITE["search"], "repeat": 2}}))
    assert cli_main(["run", str(path), "--tracking-uri", uri, "--resume-stopped"]) == 0
    runs = job_runs(uri, "search_rsnet")
    assert not any(r.data.tags.get(names.EARLY_STOPPED) for r in runs)
    resumed = {r.info.run_id: r for r in runs}
    for run in stopped:  # the same run, trained on from its checkpoint
        assert resumed[run.info.run_id].data.metrics["resumed_at_epoch"] == int(run.data.tags[names.EARLY_STOPPED])
    repeats = [r for r in runs if r.data.tags.get(names.SEARCH_ROLE) == "repeat"]
    winner = best_samples(SearchRun.of_run(r) for r in runs)["rsnet-resnet_tiny"]
    assert [r.data.tags[names.JOB] for r in repeats] == [f"{winner.tags[names.JOB]}-seed=1"]
    assert repeats[0].data.params["train.seed"] == "1" and len(runs) == 7
    status = suite_status(load_suite(path), uri)  # the repeat is listed once the winner is known
    assert status.startswith("search_rsnet: done 7/7  stopped 0") and f"{winner.tags[names.JOB]}-seed=1" in status
