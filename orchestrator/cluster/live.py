"""One compact live view of a running suite (instead of pages of Ray logs).

    [quickstart 01:12] done 3/8  running 2  failed 0  pending 3 | rsnet-... e4/10 812 img/s | san-... e2/10 430 img/s | ETA 2m05s

On a terminal the line is rewritten in place; otherwise a line is printed when something changes,
at most every ``interval`` seconds.
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback


class LiveView(Callback):
    def __init__(self, suite_name: str, epochs: dict[str, int], costs: dict[str, float] | None = None,
                 already_done: int = 0, interval: float = 10.0, slots: int = 1, stream=None):
        """``costs``: relative cost of each job (suite.estimated_cost), to scale the time of pending
        jobs from the ones seen so far; ``slots``: how many jobs can run at once."""
        self.suite_name, self.epochs = suite_name, epochs
        self.costs = costs or {name: 1.0 for name in epochs}
        self.slots = max(1, slots)
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.interval = 1.0 if self.tty else interval
        self.start = time.monotonic()
        self.state = {name: "pending" for name in epochs}
        self.progress: dict[str, dict] = {}
        self.job_seconds: list[float] = []
        self.rates: list[float] = []  # wall seconds per unit of cost of finished jobs
        self.tail_rates: list[float] = []  # final-evaluation seconds per unit of cost of finished jobs
        self.already_done = already_done
        self._last_print, self._last_line = 0.0, ""
        self.max_running = 0
        self.processes: set[tuple] = set()  # (node IP, pid) of each trial process that reported: Tune reuses them

    def __getstate__(self):  # Tune pickles callbacks with the experiment state; a stream does not pickle
        state = dict(self.__dict__)
        state["stream"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.stream = self.stream or sys.stdout

    def on_trial_start(self, iteration, trials, trial, **info):
        name = trial.config["job"]
        self.state[name] = "running"
        self.progress[name] = {"started": time.monotonic()}
        self.max_running = max(self.max_running, sum(1 for v in self.state.values() if v == "running"))
        self._show(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name = trial.config["job"]
        now = time.monotonic()
        self.processes.add((result.get("node_ip"), result.get("pid")))  # Tune adds both to every result
        if result.get("failed"):
            self.state[name] = "failed"
        elif result.get("done") and "epoch" in result:  # an epoch report on which the suite's search stopped the job
            self.state[name] = "stopped"
            self.job_seconds.append(now - self.progress.get(name, {}).get("started", self.start))
        elif result.get("done"):
            self.state[name] = "done"
            self.finished(name, now)
        else:
            self.epoch_done(name, int(result.get("epoch", 0)), int(result.get("start_epoch", 0)),
                            result.get("img_per_s", 0.0), now)
            self._show()
            return
        self._show(force=True)

    def epoch_done(self, name: str, epoch: int, start_epoch: int, img_per_s: float, now: float) -> None:
        """Epoch ``epoch`` (from 0) of job ``name`` reported at ``now``. Its wall time per epoch is
        measured from the job's start, so the per-epoch validation and the job's start-up count."""
        p = self.progress.setdefault(name, {"started": now})
        p.update(epoch=epoch, img_per_s=img_per_s, last=now,
                 epoch_wall=(now - p["started"]) / max(1, epoch + 1 - start_epoch))

    def finished(self, name: str, now: float) -> None:
        """Job ``name`` finished at ``now``: its total time and its final evaluation (the time after its
        last epoch) per unit of cost, to scale the jobs still to come."""
        p = self.progress.get(name, {})
        seconds = now - p.get("started", self.start)
        self.job_seconds.append(seconds)
        cost = self.costs.get(name, 0.0)
        if cost <= 0:  # a job with nothing to train (evaluation only) says nothing about training time
            return
        self.rates.append(seconds / cost)
        if "last" in p:
            self.tail_rates.append((now - p["last"]) / cost)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.state[trial.config["job"]] = "failed"
        self._show(force=True)

    def on_step(self, iteration, trials, **info):
        self._show()

    def on_experiment_end(self, trials, **info):
        self._show(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        counts = {s: sum(1 for v in self.state.values() if v == s)
                  for s in ("done", "stopped", "running", "failed", "pending")}
        total = len(self.state) + self.already_done
        elapsed = time.monotonic() - self.start
        stopped = f"  stopped {counts['stopped']}" if counts["stopped"] else ""
        parts = [f"[{self.suite_name} {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] "
                 f"done {counts['done'] + self.already_done}/{total}{stopped}  running {counts['running']}  "
                 f"failed {counts['failed']}  pending {counts['pending']}"]
        for name, state in self.state.items():
            p = self.progress.get(name, {})
            if state == "running" and "epoch" in p:
                parts.append(f"{name} e{p['epoch'] + 1}/{self.epochs[name]} {p['img_per_s']:.0f} img/s")
        eta = self.eta()
        if eta is not None:
            parts.append(f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s")
        return " | ".join(parts)

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until the last job ends. A running job needs its remaining epochs at its measured wall
        time per epoch, plus its final evaluation (scaled from finished jobs), minus the time since its
        last epoch; a pending job needs its cost at the seconds per unit of cost of finished jobs (of
        running ones until a job has finished). Pending jobs then go, largest first as the suite
        starts them, to whichever slot frees first."""
        now = time.monotonic() if now is None else now
        running = {n: self.progress.get(n, {}) for n, s in self.state.items() if s == "running"}
        timed = {n: p for n, p in running.items() if "epoch_wall" in p}
        rates = self.rates or [self.epochs[n] * p["epoch_wall"] / self.costs[n] for n, p in timed.items()
                               if self.costs[n] > 0]
        if not rates:
            return None
        rate = sum(rates) / len(rates)
        tail_rate = sum(self.tail_rates) / len(self.tail_rates) if self.tail_rates else 0.0
        busy = []
        for n, p in running.items():
            if n in timed:
                left = (self.epochs[n] - p["epoch"] - 1) * p["epoch_wall"] + tail_rate * self.costs[n] - (now - p["last"])
            else:  # started, no epoch yet: the whole job at the measured rate, minus its time so far
                left = rate * self.costs[n] - (now - p.get("started", now))
            busy.append(max(0.0, left))
        slots = sorted(busy + [0.0] * max(0, self.slots - len(busy)))
        for cost in sorted((self.costs[n] for n, s in self.state.items() if s == "pending"), reverse=True):
            slots[0] += cost * rate
            slots.sort()
        return max(slots)

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < self.interval:
            return
        text = self.line()
        if not self.tty and text == self._last_line:
            return
        self._last_print, self._last_line = now, text
        if self.tty:
            self.stream.write("\r\033[K" + text[: 200])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
