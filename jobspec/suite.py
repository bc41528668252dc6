"""Suite files (``experiments/*.yaml``) → validated, named, hashed jobs.

A suite file describes a grid of jobs::

    # Header comment: what it reproduces, the exact command, the expected runtime.
    name: rsnets_table5                  # suite name = MLflow experiment name; required unless inherited
    description: "RS-Nets Table 5: MRED variants, ResNet-18"
    extends: base/imagenet.yaml          # optional; relative to THIS file; or a list; chains allowed
    job:                                 # a partial JobConfig (see jobspec.schema)
      model: {backbone: resnet18}
      train: {epochs: 120}
    grid:                                # dotted key -> list of values; cartesian product
      method.distill: [full, vanilla, from_models, from_largest]
      train.seed: [0, 1]
    cases:                               # list of dotted overrides, or a mapping name -> overrides;
      - {method.name: individual}        # every case is crossed with the grid
      - {method.name: rsnet, method.distill: full}
    search:                              # optional: samples of a Tune search space, crossed with cases × grid
      space: {train.lr: {loguniform: [0.003, 0.3]}}
      num_samples: 6
    smoke:                               # dotted overrides on top of BUILTIN_SMOKE when smoke=True
      data.resolutions: [32, 24, 16]

Reading and ``extends``: ``jobspec.suite_file``; expansion, smoke and overrides: ``jobspec.expand``;
names: ``jobspec.naming``; the hash: ``jobspec.hashing``; the search section: ``jobspec.search``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import ConfigError
from .expand import expand_jobs, parse_overrides, smoke_changes
from .naming import NAME_PREFIX_KEYS, Job, cell
from .search import SearchSpec, parse_search
from .suite_file import load_layers, read_header


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    jobs: list[Job]
    header: str = ""  # the file's leading comment block, without the '# '
    smoke_note: str = ""  # for a smoke run: what --smoke changed, and which real jobs share a tiny one
    search: SearchSpec | None = None  # the suite's search section: its jobs are its samples

    def table(self) -> str:
        """A fixed-width table of the jobs, for --dry-run."""
        point_keys = [k for k in (self.jobs[0].point if self.jobs else {})
                      if k not in NAME_PREFIX_KEYS and k != "data.resolutions"]
        header = ["name", "method", "backbone", "resolutions", *point_keys, "hash"]
        rows = [[job.name, job.config.method.name, job.config.model.backbone,
                 cell(job.config.data.resolutions), *(cell(job.point.get(k)) for k in point_keys),
                 job.hash] for job in self.jobs]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        title = f"{self.name}: {len(self.jobs)} job{'s' * (len(self.jobs) != 1)} ({self.path})"
        search = ["", *lines] if (lines := self.search_lines()) else []
        return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows), *search])

    def search_lines(self) -> list[str]:
        """What the search does beyond the listed samples: its searches, their scheduler, the repeats."""
        if self.search is None:
            return []
        s = self.search
        groups = list(dict.fromkeys(j.search.group for j in self.jobs if j.search))
        stop = ("no early stopping" if s.scheduler.name == "none" else
                f"{s.scheduler.name} on {s.metric} ({s.mode}) by {s.scheduler.time_attr}, grace period "
                f"{s.scheduler.grace_period:g}")
        lines = [f"search: {s.num_samples} sample{'s' * (s.num_samples != 1)} (seed {s.seed}) in each of "
                 f"{len(groups)} search{'es' * (len(groups) != 1)}, {stop}"]
        if s.repeat > 1:
            lines.append(f"then each search's best sample (by {s.metric}) again with {s.repeat - 1} more "
                         f"seed{'s' * (s.repeat != 2)}: {len(groups) * (s.repeat - 1)} more jobs, listed once the "
                         "samples have finished")
        return lines


def load_suite(path: str | Path, overrides: Sequence[str] = (), smoke: bool = False) -> Suite:
    """Read, merge, expand and validate a suite file; every problem is a ConfigError naming the file.

    overrides: CLI ``key=value`` strings; an override replaces a grid axis (or case value) on the
    same key by that single value. smoke: make every job tiny (BUILTIN_SMOKE, then the file's
    ``smoke:`` block, then the overrides). The real suite is validated even for a smoke run.
    """
    path = Path(path).resolve()
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; a suite is a YAML file such as experiments/quickstart.yaml")
    if not path.is_file():
        raise ConfigError(f"suite file {path} does not exist")
    raw = load_layers(path)
    name = raw.get("name")
    if not name:
        raise ConfigError(f"{path}: no 'name' (give one here or in a file it extends)")
    parsed_overrides = parse_overrides(overrides)
    try:
        search = parse_search(raw.get("search"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    args = dict(job=raw.get("job", {}), grid=raw.get("grid"), cases=raw.get("cases"), overrides=parsed_overrides,
                search=search)
    try:
        jobs = real = expand_jobs(**args)
        if smoke and search is not None and search.metric_resolution() is not None:
            # Smoke jobs train at 32/24/16 px, where the real suite's acc1/r<res> may not be.
            args["search"] = search = search.model_copy(update={"metric": "acc1/mean"})
        if smoke:
            jobs = expand_jobs(**args, smoke=True, smoke_block=raw.get("smoke"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    note = describe_smoke(real, jobs, raw.get("smoke"), parsed_overrides) if smoke else ""
    return Suite(name=name, description=raw.get("description") or "", path=path, jobs=jobs,
                 header=read_header(path), smoke_note=note, search=search)


def describe_smoke(real: list[Job], smoke: list[Job], smoke_block, overrides) -> str:
    """One paragraph: the settings --smoke put on every job, and the real jobs that became one tiny job."""
    changes = {k: v for k, v in smoke_changes(smoke_block).items() if k not in overrides}
    shape = ""
    if "data.resolutions" not in (smoke_block or {}) and "data.resolutions" not in overrides:
        changes.pop("data.resolutions", None)
        shape = " and data.resolutions of the job's shape (an I-Net set or several sizes: 32,24,16; one size: 32)"
    lines = [f"--smoke: {len(real)} real job{'s' * (len(real) != 1)} -> {len(smoke)} tiny one"
             f"{'s' * (len(smoke) != 1)}, each with " + ", ".join(f"{k}={cell(v)}" for k, v in changes.items())
             + shape]
    for job in smoke:
        if job.merged:
            lines.append(f"  {job.name} also stands for: " + "; ".join(job.merged))
    return "\n".join(lines)
