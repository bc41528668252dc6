"""The planner: each job of a suite -> skip, copy, evaluate or train, from a hand-built snapshot of the
store (no MLflow, no Ray, no disk)."""
from __future__ import annotations

from types import SimpleNamespace

from jobspec import training_hash
from orchestrator.cluster.evaluate_only import TrainedModel
from orchestrator.cluster.plan import Copy, Evaluate, Skip, StoreSnapshot, Train, plan_jobs
from orchestrator.engine.checkpoint import EVALUATED_FROM_KEY


def job(tiny_job, name, **overrides):
    return SimpleNamespace(name=name, hash=f"hash-{name}", config=tiny_job(**overrides))


def test_each_job_gets_the_decision_its_snapshot_calls_for(tiny_job):
    done, elsewhere, own, other_model, old_copy, new = (
        job(tiny_job, "done"), job(tiny_job, "elsewhere", **{"train.lr": 0.01}),
        job(tiny_job, "own", **{"train.lr": 0.02}), job(tiny_job, "other-model", **{"train.lr": 0.03}),
        job(tiny_job, "old-copy", **{"train.lr": 0.04}), job(tiny_job, "new", **{"train.lr": 0.05}))
    source = SimpleNamespace(info=SimpleNamespace(run_id="r-source"))
    model = TrainedModel(run=SimpleNamespace(info=SimpleNamespace(run_id="r-trainer")), checkpoint_dir="/m")
    snapshot = StoreSnapshot(
        finished_here={done.hash}, finished_elsewhere={elsewhere.hash: source},
        models={training_hash(other_model.config): model, training_hash(own.config): model},
        own_checkpoints={own.name: {"directory": "/own"},
                         old_copy.name: {"directory": "/old-copy", EVALUATED_FROM_KEY: "/gone"}})
    jobs = [done, elsewhere, own, other_model, old_copy, new]

    assert plan_jobs(jobs, snapshot) == [
        Skip(done), Copy(elsewhere, source),
        Evaluate(own, "/own"),  # its own final checkpoint wins over another job's model
        Evaluate(other_model, "/m", model),
        Evaluate(old_copy, "/old-copy"),  # an evaluation copy of an earlier version, its source gone
        Train(new)]

    # --no-reuse: nothing copied, no other job's model evaluated; what is done here or its own stays so.
    assert plan_jobs(jobs, snapshot, reuse=False) == [
        Skip(done), Train(elsewhere), Evaluate(own, "/own"), Train(other_model),
        Evaluate(old_copy, "/old-copy"), Train(new)]


def test_an_evaluation_copy_of_an_earlier_version_gives_way_to_its_source(tiny_job):
    copied = job(tiny_job, "copied")
    model = TrainedModel(run=SimpleNamespace(info=SimpleNamespace(run_id="r")), checkpoint_dir="/m")
    snapshot = StoreSnapshot(models={training_hash(copied.config): model},
                             own_checkpoints={copied.name: {"directory": "/c", EVALUATED_FROM_KEY: "/m"}})
    assert plan_jobs([copied], snapshot) == [Evaluate(copied, "/m", model)]
    assert plan_jobs([copied], StoreSnapshot()) == [Train(copied)]


def test_a_search_sample_stopped_early_stays_stopped_unless_resumed(tiny_job):
    sample = SimpleNamespace(**vars(job(tiny_job, "sample")), search=SimpleNamespace(group="g"))
    plain = SimpleNamespace(**vars(job(tiny_job, "plain", **{"train.lr": 0.01})), search=None)
    snapshot = StoreSnapshot(stopped_here={sample.hash: "r-sample", plain.hash: "r-plain"},
                             unfinished_here={sample.hash: "r-sample", plain.hash: "r-plain"})
    # A stopped sample is done for its search; a job outside any search with only such a run trains it on.
    assert plan_jobs([sample, plain], snapshot) == [Skip(sample), Train(plain)]
    assert plan_jobs([sample, plain], snapshot, resume_stopped=True) == [Train(sample), Train(plain)]
