"""Which sample won each search of a suite, read from the job runs' tags and metrics.

One rule for the suite driver (which reruns each winner over more seeds, ``search.repeat``) and for the
tables (``make_tables.py search``, and the paper tables of a suite with a search): a search's samples
are the FINISHED runs tagged with its name (``names.SEARCH``) and the role ``sample``; those stopped
early (``names.EARLY_STOPPED``) trained less and take no part; the winner has the best value of the
search's metric (``names.SEARCH_METRIC``, its last epoch's value, the one MLflow keeps as the run's
metric) in the search's mode; a tie goes to the run whose job name sorts first, so every reader picks
the same one.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jobspec.naming import repeat_name
from jobspec.search import REPEAT, SAMPLE
from records import names


@dataclass(frozen=True)
class SearchRun:
    """A job run as this module reads it: from an MLflow ``Run`` or from a row of the tables' frame."""
    run_id: str
    status: str
    tags: Mapping[str, str]
    metrics: Mapping[str, float]

    @classmethod
    def of_run(cls, run) -> "SearchRun":
        return cls(run.info.run_id, run.info.status, run.data.tags, run.data.metrics)

    @classmethod
    def of_row(cls, row: Mapping) -> "SearchRun":
        """A row of ``analysis.tables.store.fetch_runs``'s frame (``tags.*``, ``metrics.*`` columns)."""
        def part(prefix: str) -> dict:
            return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix) and _present(v)}
        return cls(row["run_id"], row.get("status", "FINISHED"), part("tags."), part("metrics."))

    @property
    def search(self) -> str | None:
        return self.tags.get(names.SEARCH)

    @property
    def role(self) -> str | None:
        return self.tags.get(names.SEARCH_ROLE)

    @property
    def stopped(self) -> bool:
        return bool(self.tags.get(names.EARLY_STOPPED))

    def value(self) -> float | None:
        """The run's value of its search's metric (None without one)."""
        value = self.metrics.get(self.tags.get(names.SEARCH_METRIC, ""))
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def best_samples(runs: Iterable[SearchRun]) -> dict[str, SearchRun]:
    """Search name -> its winning sample, for every search with at least one sample that ran to its end."""
    best: dict[str, SearchRun] = {}
    for run in sorted(runs, key=lambda r: r.tags.get(names.JOB, "")):
        if run.search is None or run.role != SAMPLE or run.status != "FINISHED" or run.stopped or run.value() is None:
            continue
        sign = -1.0 if run.tags.get(names.SEARCH_MODE) == "min" else 1.0
        held = best.get(run.search)
        if held is None or sign * run.value() > sign * held.value():
            best[run.search] = run
    return best


def winners_with_repeats(runs: Iterable[SearchRun]) -> dict[str, list[SearchRun]]:
    """Search name -> its winning sample, then the runs that repeat it with other seeds (``search.repeat``)."""
    runs = list(runs)
    found = {group: [run] for group, run in best_samples(runs).items()}
    for run in runs:
        winner = found.get(run.search, [None])[0]
        if (run.role == REPEAT and winner is not None
                and run.tags.get(names.JOB, "").startswith(repeat_name(winner.tags.get(names.JOB, "")))):
            found[run.search].append(run)
    return found
