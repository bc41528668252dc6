"""Early stopping for a suite's search: one Tune scheduler (ASHA or median stopping) per search.

A suite's jobs run in one Tune experiment, but a search compares only its own samples: RS-Net samples
against RS-Net samples, each I-Net row against the samples of that row. ``SearchScheduler`` keeps one
``AsyncHyperBandScheduler`` or ``MedianStoppingRule`` per search (``jobspec.search.SearchMembership.group``)
and hands each trial's epoch reports to its search's scheduler; jobs outside a search (and samples
resumed with ``--resume-stopped``) always continue.

Progress (Tune's ``time_attr``) is the epochs a job has trained (the loop's 0-based ``epoch`` + 1), or the
compute it has spent (``compute``: 1e12 multiply-adds, forward, over the training resolutions), which the
loop reports every epoch. Deviations from Tune's own use, on purpose:
- a job in its last epoch is never stopped: its budget is spent, and it goes on to its matrix;
- ASHA never stops a trial for reaching ``max_t`` (``stop_last_trials=False``): the job's epochs end it;
- the median rule's "pause while too few results" becomes "continue": a paused job would hold its
  slot's process, and a job's checkpoint already makes it resumable.
"""
from __future__ import annotations

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from jobspec.search import SAMPLE, SearchSpec

PROGRESS = "search/progress"  # the time attribute each inner scheduler reads
# With time_attr compute and no max_t, ASHA's rungs go up this far: only the rungs a job reaches matter.
UNBOUNDED_COMPUTE = 1e15


class SearchScheduler(FIFOScheduler):
    def __init__(self, spec: SearchSpec, jobs, exclude: set[str] = frozenset()):
        """``jobs``: the suite's jobs (``jobspec.Job``) that this invocation runs; ``exclude``: job names
        that run to their end whatever their search (samples resumed with ``--resume-stopped``)."""
        super().__init__()
        self.spec = spec
        self.group_of = {j.name: j.search.group for j in jobs
                         if j.search is not None and j.search.role == SAMPLE and j.name not in exclude}
        self.epochs = {j.name: j.config.train.epochs for j in jobs}
        self.schedulers = {}
        for group in set(self.group_of.values()):
            longest = max(self.epochs[name] for name, g in self.group_of.items() if g == group)
            self.schedulers[group] = self._scheduler(longest)
        self.stopped: dict[str, int] = {}  # job name -> epochs it had trained when its search stopped it
        self._last: dict[str, dict] = {}  # trial id -> its last epoch report, as the inner scheduler saw it

    def _scheduler(self, longest_epochs: int):
        s = self.spec.scheduler
        common = dict(time_attr=PROGRESS, metric=self.spec.metric, mode=self.spec.mode)
        if s.name == "median":
            return MedianStoppingRule(grace_period=s.grace_period, min_samples_required=s.min_samples_required,
                                      **common)
        if s.name == "asha":
            top = s.max_t or (longest_epochs if s.time_attr == "epoch" else UNBOUNDED_COMPUTE)
            return AsyncHyperBandScheduler(max_t=max(top, s.grace_period), grace_period=s.grace_period,
                                           reduction_factor=s.reduction_factor, stop_last_trials=False, **common)
        return None  # "none": every sample runs to its end

    def _inner(self, trial):
        group = self.group_of.get(trial.config.get("job"))
        return self.schedulers.get(group) if group is not None else None

    def progress(self, result: dict) -> float:
        if self.spec.scheduler.time_attr == "compute":
            return float(result["compute"])
        return int(result["epoch"]) + 1

    def on_trial_add(self, tune_controller, trial):
        inner = self._inner(trial)
        if inner is not None:
            inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        inner = self._inner(trial)
        if inner is None or "epoch" not in result or self.spec.metric not in result:
            return TrialScheduler.CONTINUE  # not a search sample, or not an epoch report (the final one)
        seen = {**result, PROGRESS: self.progress(result)}
        self._last[trial.trial_id] = seen
        action = inner.on_trial_result(tune_controller, trial, seen)
        name, trained = trial.config["job"], int(result["epoch"]) + 1
        if action != TrialScheduler.STOP or trained >= self.epochs[name]:
            return TrialScheduler.CONTINUE
        self.stopped[name] = trained
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller, trial, result: dict):
        inner, last = self._inner(trial), self._last.pop(trial.trial_id, None)
        if inner is not None and last is not None:  # the final report has no metric: its last epoch's counts
            inner.on_trial_complete(tune_controller, trial, last)

    def on_trial_error(self, tune_controller, trial):
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial):
        inner = self._inner(trial)
        self._last.pop(trial.trial_id, None)
        if isinstance(inner, AsyncHyperBandScheduler) and trial.trial_id in inner._trial_info:
            inner.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"SearchScheduler: {len(self.schedulers)} searches, {len(self.stopped)} samples stopped early"
