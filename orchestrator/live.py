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
        self.rates: list[float] = []  # seconds per unit of cost of finished jobs
        self.already_done = already_done
        self._last_print, self._last_line = 0.0, ""
        self.max_running = 0

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
        if result.get("failed"):
            self.state[name] = "failed"
        elif result.get("done"):
            self.state[name] = "done"
            p = self.progress.get(name, {})
            self.job_seconds.append(time.monotonic() - p.get("started", self.start))
            if p.get("epoch_time"):
                self.rates.append(self.epochs[name] * p["epoch_time"] / self.costs[name])
        else:
            self.progress.setdefault(name, {"started": time.monotonic()}).update(
                epoch=int(result.get("epoch", 0)), img_per_s=result.get("img_per_s", 0.0),
                epoch_time=result.get("epoch_time_s", 0.0))
            self._show()
            return
        self._show(force=True)

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
        counts = {s: sum(1 for v in self.state.values() if v == s) for s in ("done", "running", "failed", "pending")}
        total = len(self.state) + self.already_done
        elapsed = time.monotonic() - self.start
        parts = [f"[{self.suite_name} {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] "
                 f"done {counts['done'] + self.already_done}/{total}  running {counts['running']}  "
                 f"failed {counts['failed']}  pending {counts['pending']}"]
        for name, state in self.state.items():
            p = self.progress.get(name, {})
            if state == "running" and "epoch" in p:
                parts.append(f"{name} e{p['epoch'] + 1}/{self.epochs[name]} {p['img_per_s']:.0f} img/s")
        eta = self.eta(counts)
        if eta is not None:
            parts.append(f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s")
        return " | ".join(parts)

    def eta(self, counts) -> float | None:
        """Remaining epochs of running jobs at their last epoch time, plus pending jobs at the seconds per
        unit of cost seen so far, shared over the slots."""
        running = [(n, self.progress.get(n, {})) for n, s in self.state.items() if s == "running"]
        timed = [(n, p) for n, p in running if p.get("epoch_time")]
        rates = self.rates + [self.epochs[n] * p["epoch_time"] / self.costs[n] for n, p in timed]
        if not rates:
            return None
        remaining = sum((self.epochs[n] - p["epoch"] - 1) * p["epoch_time"] for n, p in timed)
        rate = sum(rates) / len(rates)
        pending = sum(self.costs[n] for n, s in self.state.items() if s == "pending") * rate
        return (remaining + pending) / self.slots

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
