"""Job names: readable, unique within a suite, filesystem-safe.

A name is ``<method>-<backbone>`` (``<method>-smoke`` for a smoke run's tiny stand-in, whose
backbone is not the one its case names), then the named case (when cases are named), then ``label=value``
for every key that varies across the suite, each label the shortest dotted suffix no other varying
key shares. The rows of an I-Net set carry their one resolution; their set's group name does not.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from .hashing import config_hash
from .schema import JobConfig
from .search import REPEAT, SAMPLE, SearchMembership, SearchSpec
from .tree import lookup

# Keys that are already part of every job name's prefix.
NAME_PREFIX_KEYS = ("method.name", "model.backbone")
_SHORT_LABELS = {"data.resolutions": "res", "eval.test_resolutions": "test_res"}


@dataclass
class Job:
    name: str  # unique within the suite, filesystem-safe
    config: JobConfig
    hash: str  # config_hash(config)
    point: dict[str, object]  # dotted keys that vary across the suite -> this job's values
    group: str  # I-Net set name shared by its per-resolution jobs; otherwise == name
    merged: list[str] = field(default_factory=list)  # other suite points that expand to this same job
    search: SearchMembership | None = None  # a sample of a suite's search (jobspec.search), or a repeat of its best


def name_jobs(expanded: list, grid: Mapping, case_list, smoke: bool = False,
              search: SearchSpec | None = None) -> list[Job]:
    """``search``: the suite's search, whose keys label the samples; a search is named as its jobs are,
    without those keys (and one per row of an I-Net set, each tuned at its own resolution)."""
    search_keys = list(search.space) if search else []
    named_cases = sum(name is not None for name, _ in case_list) > 1
    axes = list(dict.fromkeys([k for _, values in case_list for k in values] + list(grid) + search_keys))
    inet_rows = any(e.inet_set for e in expanded)
    candidates = axes + (["data.resolutions"] if inet_rows and "data.resolutions" not in axes else [])
    trees = [e.config.to_dict() for e in expanded]
    varying = [k for k in candidates if len({canonical(lookup(t, k)) for t in trees}) > 1]
    # With named cases the case name stands for the keys that only the cases set.
    case_only = {k for _, values in case_list for k in values} - set(grid) if named_cases else set()
    name_keys = [k for k in varying if k not in NAME_PREFIX_KEYS and k not in case_only]
    # The resolutions label every job when the suite varies them; otherwise only the rows of an
    # I-Net set carry their one resolution, and the set's group name leaves it out.
    res_is_axis = "data.resolutions" in name_keys and "data.resolutions" in axes
    name_keys = [k for k in name_keys if k != "data.resolutions"]
    labels = _short_labels([*name_keys, "data.resolutions"])

    def name_of(item, point: dict, resolutions: list[int] | None, keys: Sequence[str] = name_keys) -> str:
        parts = [item.config.method.name, "smoke" if smoke else item.config.model.backbone]
        if named_cases:
            parts.append(item.point.case)
        parts += [f"{labels[k]}={_name_value(point[k])}" for k in keys]
        if resolutions is not None:
            parts.append(f"{labels['data.resolutions']}={_name_value(resolutions)}")
        return _filesystem_safe("-".join(parts))

    jobs = []
    for item, tree in zip(expanded, trees):
        point = {k: lookup(tree, k) for k in varying}
        resolutions = item.config.data.resolutions
        name = name_of(item, point, resolutions if res_is_axis or item.inet_set else None)
        group = name
        if item.inet_set:
            group = name_of(item, point, item.inet_set if res_is_axis else None)
        membership = None
        if search is not None:
            label = name_of(item, point, resolutions if res_is_axis or item.inet_set else None,
                            [k for k in name_keys if k not in search_keys])
            membership = SearchMembership(label, search.metric, search.mode, SAMPLE)
        jobs.append(Job(name=name, config=item.config, hash=item.hash, point=point, group=group,
                        merged=list(item.merged), search=membership))
    return _make_names_unique(jobs)


def repeat_name(sample: str, seed: int | str = "") -> str:
    """The name of a repeat of the sample job ``sample`` with ``seed`` (without it: the prefix of all)."""
    return f"{sample}-seed={seed}"


def repeats_of(job: Job, repeat: int) -> list[Job]:
    """A search's best sample ``job`` again with the next ``repeat - 1`` seeds (``search.repeat``): jobs of
    their own, named ``<job>-seed=<s>``; with the sample itself they make ``repeat`` seeds of one config."""
    repeats = []
    for seed in range(job.config.train.seed + 1, job.config.train.seed + repeat):
        config = job.config.model_copy(deep=True)
        config.train.seed = seed
        name = repeat_name(job.name, seed)
        repeats.append(Job(name=name, config=config.validate(), hash=config_hash(config),
                           point={**job.point, "train.seed": seed}, group=name,
                           search=replace(job.search, role=REPEAT) if job.search else None))
    return repeats


def _short_labels(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key shares: 'method.distill' -> 'distill'."""
    labels = {}
    for key in keys:
        if key in _SHORT_LABELS:
            labels[key] = _SHORT_LABELS[key]
            continue
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other == suffix or other.endswith("." + suffix) for other in keys if other != key):
                break
        labels[key] = suffix
    return labels


def _make_names_unique(jobs: list[Job]) -> list[Job]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.name] = counts.get(job.name, 0) + 1
    for job in jobs:
        if counts[job.name] > 1:  # only if values that differ look alike once made filesystem-safe
            if job.group == job.name:
                job.group = f"{job.name}-{job.hash[:8]}"
            job.name = f"{job.name}-{job.hash[:8]}"
    return jobs


def _filesystem_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("._") or "job"


def _name_value(value) -> str:
    if isinstance(value, list):
        return "_".join(_name_value(v) for v in value)
    return _scalar(value)


def cell(value) -> str:
    if isinstance(value, list):
        return ",".join(cell(v) for v in value)
    return _scalar(value)


def _scalar(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return canonical(value)
    return repr(value) if isinstance(value, float) else str(value)


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True)
