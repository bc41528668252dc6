"""``search.repeat: N``: each search's best sample again with N - 1 more seeds, once all its samples are done.

The repeats are ordinary jobs (``jobspec.naming.repeats_of``): their own config hashes, so a rerun
trains none of them again; the winner is picked by ``records.search_runs.best_samples``, the rule the
tables use. A search with a sample not yet done (failed, or this invocation was interrupted) gets no
repeats this time: its winner is not known.
"""
from __future__ import annotations

import logging

from jobspec.naming import repeats_of
from records import names
from records.search_runs import SearchRun, best_samples

logger = logging.getLogger(__name__)


def repeats_of_best(suite, runs, failed: dict[str, str] | None = None, say=logger.info) -> list:
    """The repeat jobs of every search of ``suite`` whose samples are all done, given the suite's job runs;
    ``say`` takes a line per search (the winner, or why it has none yet)."""
    if suite.search is None or suite.search.repeat <= 1:
        return []
    current = {job.hash for job in suite.jobs}  # not the samples of an earlier version of the suite
    runs = [run for run in runs if run.data.tags.get(names.CONFIG_HASH) in current]
    done = {run.data.tags.get(names.CONFIG_HASH) for run in runs if run.info.status == "FINISHED"}
    best = best_samples(SearchRun.of_run(run) for run in runs)
    samples: dict[str, list] = {}
    for job in suite.jobs:
        if job.search is not None:
            samples.setdefault(job.search.group, []).append(job)
    jobs = []
    for group, members in samples.items():
        missing = [job.name for job in members if job.hash not in done or job.name in (failed or {})]
        winner = best.get(group)
        if missing or winner is None:
            why = f"{len(missing)} of its samples not done" if missing else "no sample ran to its end"
            say(f"search {group}: no repeats yet ({why}); run the suite again once they are")
            continue
        job = next(j for j in members if j.hash == winner.tags.get(names.CONFIG_HASH))
        say(f"search {group}: best sample {job.name} ({winner.tags.get(names.SEARCH_METRIC)} "
                    f"{winner.value():.2f}); {suite.search.repeat - 1} more seed(s)")
        jobs += repeats_of(job, suite.search.repeat)
    return jobs
