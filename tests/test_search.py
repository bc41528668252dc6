"""A suite's search section without Ray: validation, sampling, jobs and names, the scheduler per search,
and which sample wins."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from ray.tune.schedulers import TrialScheduler

from backbones.build import build_net
from backbones.complexity import count_madds, training_madds
from jobspec import ConfigError, load_suite
from jobspec.expand import expand_jobs
from jobspec.search import REPEAT, SAMPLE, parse_search
from jobspec.naming import repeats_of
from orchestrator.cluster.search_scheduler import SearchScheduler
from records import names
from records.search_runs import SearchRun, best_samples

REPO = Path(__file__).resolve().parent.parent
JOB = {"model": {"backbone": "resnet_tiny", "small_input": True},
       "method": {"name": "rsnet"},
       "data": {"resolutions": [32, 24]},
       "train": {"epochs": 4}}
SEARCH = {"space": {"train.lr": {"loguniform": [0.003, 0.3]},
                    "train.weight_decay": {"choice": [0.0, 1.0e-4, 5.0e-4]}},
          "num_samples": 6, "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
          "metric": "acc1/mean", "mode": "max", "seed": 0}


def suite_file(tmp_path: Path, search: dict | None = None, name: str = "s", **sections) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "job": JOB, "search": search or SEARCH, **sections}))
    return path


def test_samples_are_jobs_drawn_reproducibly_within_their_distributions(tmp_path):
    suite = load_suite(suite_file(tmp_path))
    assert len(suite.jobs) == 6 and len({j.hash for j in suite.jobs}) == 6
    for job in suite.jobs:
        assert 0.003 <= job.config.train.lr <= 0.3
        assert job.config.train.lr == float(f"{job.config.train.lr:.4g}")  # 4 significant digits
        assert job.config.train.weight_decay in (0.0, 1e-4, 5e-4)
        assert job.name == f"rsnet-resnet_tiny-lr={job.config.train.lr!r}-weight_decay={job.config.train.weight_decay!r}"
        assert job.search.group == "rsnet-resnet_tiny" and job.search.role == SAMPLE
    again = load_suite(suite_file(tmp_path))
    assert [j.hash for j in again.jobs] == [j.hash for j in suite.jobs]  # a rerun draws the same configurations
    other = load_suite(suite_file(tmp_path, {**SEARCH, "seed": 1}, name="t"))
    assert {j.config.train.lr for j in other.jobs}.isdisjoint({j.config.train.lr for j in suite.jobs})
    # loguniform: the logs of the draws spread over the whole range (6 uniform draws of log10 in [-2.5, -0.5])
    logs = sorted(math.log10(j.config.train.lr) for j in load_suite(suite_file(
        tmp_path, {**SEARCH, "num_samples": 40}, name="many")).jobs)
    assert logs[0] < -2.0 and logs[-1] > -1.0


def test_every_case_and_inet_row_gets_the_same_samples_as_a_search_of_its_own(tmp_path):
    path = suite_file(tmp_path, {**SEARCH, "num_samples": 3},
                      cases=[{"method.name": "rsnet"}, {"method.name": "individual"}])
    suite = load_suite(path)
    groups = {}
    for job in suite.jobs:
        groups.setdefault(job.search.group, []).append(job)
    assert sorted(groups) == ["individual-resnet_tiny-res=24", "individual-resnet_tiny-res=32", "rsnet-resnet_tiny"]
    draws = {g: sorted((j.config.train.lr, j.config.train.weight_decay) for j in jobs) for g, jobs in groups.items()}
    assert len({tuple(d) for d in draws.values()}) == 1 and len(draws["rsnet-resnet_tiny"]) == 3  # paired, equal budgets
    # --dry-run lists the samples and says what the search does with them
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "run", str(path), "--dry-run"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "9 jobs" in out.stdout and "train.lr" in out.stdout
    assert "search: 3 samples (seed 0) in each of 3 searches, asha on acc1/mean (max) by epoch" in out.stdout


def test_an_override_replaces_the_draws_of_its_key(tmp_path):
    suite = load_suite(suite_file(tmp_path), overrides=["train.lr=0.1"])
    assert {j.config.train.lr for j in suite.jobs} == {0.1}
    assert len(suite.jobs) == len({j.config.train.weight_decay for j in suite.jobs})  # identical draws run once


@pytest.mark.parametrize("change, message", [
    ({"space": {"train.lrr": {"uniform": [0.1, 0.2]}}}, "unknown key 'train.lrr' — did you mean 'train.lr'?"),
    ({"space": {"train.lr": {"loguniform": ["a", 0.3]}}}, "search.space.train.lr: loguniform takes [low, high], two numbers"),
    ({"space": {"train.lr": {"loguniform": [0.0, 0.3]}}}, "loguniform needs low > 0"),
    ({"space": {"train.lr": {"uniform": [0.3, 0.1]}}}, "uniform needs low < high"),
    ({"space": {"train.lr": {"gauss": [0.1, 0.2]}}}, "unknown distribution 'gauss'"),
    ({"space": {"train.epochs": {"uniform": [1, 4]}}}, "search.space.train.epochs: uniform can draw"),
    ({"space": {"train.epochs": {"randint": [1, 4.5]}}}, "randint takes [low, high], two integers"),
    ({"scheduler": {"name": "hyperband"}}, "search.scheduler.name: expected one of asha, median, none"),
    ({"scheduler": {"grace": 1}}, "search: unknown key 'scheduler.grace' — did you mean 'scheduler.grace_period'?"),
    ({"num_samples": 0}, "search.num_samples must be > 0"),
    ({"metric": "acc5/mean"}, "search.metric: expected acc1/mean or acc1/r<resolution>"),
    ({"metric": "acc1/r40"}, "trains at [32, 24] px, not 40"),
])
def test_a_bad_search_is_one_line_naming_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as error:
        load_suite(suite_file(tmp_path, {**SEARCH, **change}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_searched_key_cannot_also_be_a_grid_axis_and_the_cli_says_so_in_one_line(tmp_path):
    path = suite_file(tmp_path, grid={"train.lr": [0.1, 0.2]})
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "run", str(path), "--dry-run"],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "search.space: train.lr is also a grid axis or a case value" in out.stderr


def test_repeats_are_the_best_config_with_the_next_seeds():
    # a sample of seed 3: its repeats take seeds 4 and 5, and only the seed (and so the hash) differs
    search = parse_search({**SEARCH, "num_samples": 1})
    job = expand_jobs({**JOB, "train": {"epochs": 4, "seed": 3}}, search=search)[0]
    repeats = repeats_of(job, 3)
    assert [r.config.train.seed for r in repeats] == [4, 5]
    assert [r.name for r in repeats] == [f"{job.name}-seed=4", f"{job.name}-seed=5"]
    assert all(r.search.role == REPEAT and r.search.group == job.search.group for r in repeats)
    for r in repeats:
        same = r.config.model_copy(deep=True)
        same.train.seed = 3
        assert same == job.config and r.hash != job.hash
    assert repeats_of(job, 1) == []


# ---------------------------------------------------------------- the scheduler: one ASHA per search


class Trial:
    """What SearchScheduler and Tune's schedulers read of a Tune trial: its id and its config (the job's
    name); hashed by identity, as Tune's trials are."""

    def __init__(self, name: str, trial_id: str):
        self.trial_id, self.config = trial_id, {"job": name}


trial = Trial
# What the median rule asks of Tune's controller while it has too few results: the trials still to run.
CONTROLLER = SimpleNamespace(get_live_trials=lambda: [])


def jobs(*specs):
    """(name, search group, epochs) -> the suite jobs as the scheduler reads them."""
    return [SimpleNamespace(name=n, search=SimpleNamespace(group=g, role=SAMPLE),
                            config=SimpleNamespace(train=SimpleNamespace(epochs=e))) for n, g, e in specs]


def epoch(e: int, acc: float, compute: float = 0.0) -> dict:
    return {"epoch": e, "acc1/mean": acc, "compute": compute}


def test_asha_stops_a_sample_only_against_its_own_search():
    spec = parse_search(SEARCH)
    scheduler = SearchScheduler(spec, jobs(("a1", "A", 4), ("a2", "A", 4), ("b1", "B", 4)))
    a1, a2, b1 = trial("a1", "1"), trial("a2", "2"), trial("b1", "3")
    for t in (a1, a2, b1):
        scheduler.on_trial_add(None, t)
    # Rung 1 (after one epoch): a1 is the first result of search A; b1 is far better but in search B.
    assert scheduler.on_trial_result(None, b1, epoch(0, 90.0)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, a1, epoch(0, 40.0)) == TrialScheduler.CONTINUE
    # a2 below A's cutoff (the median of A's rung = 40) is stopped, after 1 epoch
    assert scheduler.on_trial_result(None, a2, epoch(0, 30.0)) == TrialScheduler.STOP
    assert scheduler.stopped == {"a2": 1}
    # the final report (no metric) and a job outside every search always continue
    assert scheduler.on_trial_result(None, a1, {"done": True, "result_dir": "x"}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trial("plain", "9"), epoch(0, 1.0)) == TrialScheduler.CONTINUE


def test_a_sample_in_its_last_epoch_is_never_stopped_and_resumed_samples_run_on():
    spec = parse_search({**SEARCH, "scheduler": {"name": "asha", "grace_period": 2}})
    scheduler = SearchScheduler(spec, jobs(("a1", "A", 4), ("a2", "A", 2), ("a3", "A", 4)), exclude={"a3"})
    a1, a2, a3 = trial("a1", "1"), trial("a2", "2"), trial("a3", "3")
    for t in (a1, a2, a3):
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, a1, epoch(1, 60.0)) == TrialScheduler.CONTINUE
    # a2 has 2 epochs: at its rung-2 result it is below the cutoff, but its budget is spent: it goes on to its matrix
    assert scheduler.on_trial_result(None, a2, epoch(1, 10.0)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, a3, epoch(1, 0.0)) == TrialScheduler.CONTINUE  # --resume-stopped
    assert scheduler.stopped == {}


def test_compute_as_time_attribute_compares_samples_at_equal_compute():
    spec = parse_search({**SEARCH, "scheduler": {"name": "asha", "time_attr": "compute", "grace_period": 0.5}})
    scheduler = SearchScheduler(spec, jobs(("cheap", "A", 8), ("dear", "A", 8)))
    cheap, dear = trial("cheap", "1"), trial("dear", "2")
    for t in (cheap, dear):
        scheduler.on_trial_add(None, t)
    # cheap spends 0.25 per epoch, dear 0.5: at epoch 1 dear reaches the 0.5 rung, cheap only at epoch 2
    assert scheduler.on_trial_result(None, dear, epoch(0, 50.0, compute=0.5)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, cheap, epoch(0, 10.0, compute=0.25)) == TrialScheduler.CONTINUE  # below the rung
    assert scheduler.on_trial_result(None, cheap, epoch(1, 20.0, compute=0.5)) == TrialScheduler.STOP
    assert scheduler.stopped == {"cheap": 2}


def test_median_rule_stops_a_sample_below_the_median_of_its_search():
    spec = parse_search({**SEARCH, "scheduler": {"name": "median", "grace_period": 1, "min_samples_required": 2}})
    scheduler = SearchScheduler(spec, jobs(*((f"a{i}", "A", 4) for i in range(4)), ("b", "B", 4)))
    trials = [trial(f"a{i}", str(i)) for i in range(4)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    for t, acc in zip(trials[:2], (50.0, 60.0)):
        scheduler.on_trial_result(CONTROLLER, t, epoch(0, acc))
        scheduler.on_trial_result(CONTROLLER, t, epoch(1, acc))
    assert scheduler.on_trial_result(CONTROLLER, trials[2], epoch(1, 70.0)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(CONTROLLER, trials[3], epoch(1, 40.0)) == TrialScheduler.STOP  # median of 50, 60, 70
    b = trial("b", "b")
    scheduler.on_trial_add(None, b)
    assert scheduler.on_trial_result(CONTROLLER, b, epoch(1, 1.0)) == TrialScheduler.CONTINUE  # search B has no others


# ---------------------------------------------------------------- which sample wins


def run(job: str, value: float, status="FINISHED", stopped="", role=SAMPLE, group="A", mode="max") -> SearchRun:
    tags = {names.JOB: job, names.SEARCH: group, names.SEARCH_ROLE: role, names.SEARCH_METRIC: "acc1/mean",
            names.SEARCH_MODE: mode}
    if stopped:
        tags[names.EARLY_STOPPED] = stopped
    return SearchRun(job, status, tags, {"acc1/mean": value})


def test_the_best_sample_ran_to_its_end_and_ties_go_to_the_first_job_name():
    runs = [run("a-lr=0.1", 60.0), run("a-lr=0.2", 75.0, stopped="2"), run("a-lr=0.3", 70.0),
            run("a-lr=0.4", 90.0, status="FAILED"), run("a-lr=0.3-seed=1", 95.0, role=REPEAT),
            run("b-lr=0.2", 50.0, group="B"), run("b-lr=0.1", 50.0, group="B"),
            run("c-1", 3.0, group="C", mode="min"), run("c-2", 2.0, group="C", mode="min")]
    best = best_samples(runs)
    assert {g: r.run_id for g, r in best.items()} == {"A": "a-lr=0.3", "B": "b-lr=0.1", "C": "c-2"}
    assert best_samples([run("a", 1.0, stopped="1")]) == {}


def test_training_compute_counts_each_listed_resolution():
    net = build_net("resnet_tiny", 10, [32, 32, 24], small_input=True, width=4)
    assert training_madds(net, [32, 32, 24]) == 2 * count_madds(net, 32) + count_madds(net, 24)
    assert count_madds(net, 32) > count_madds(net, 24) > 0


def test_scheduler_none_lets_every_sample_run_to_its_end():
    spec = parse_search({**SEARCH, "scheduler": {"name": "none"}})
    scheduler = SearchScheduler(spec, jobs(("a1", "A", 4), ("a2", "A", 4)))
    a1, a2 = trial("a1", "1"), trial("a2", "2")
    for t in (a1, a2):
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, a1, epoch(0, 90.0)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, a2, epoch(0, 1.0)) == TrialScheduler.CONTINUE  # ASHA would stop it
    assert scheduler.stopped == {}
