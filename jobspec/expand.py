"""Expansion: a suite's merged ``job`` ⊕ case ⊕ grid point ⊕ (smoke) ⊕ CLI overrides → validated jobs.

A CLI override (``--set key=value``, value parsed as YAML) wins over everything the suite says about
that key: a grid axis on that key (or under it) is replaced by the single override value, and the key
is dropped from every case. Points that compute the same thing (the same config hash) run once.

I-Net sets: a point with ``method.name: individual`` and k > 1 training resolutions becomes k jobs,
one per resolution, sharing ``Job.group`` and one list of test resolutions.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from .errors import ConfigError, show, unknown_key_message
from .hashing import config_hash
from .naming import Job, name_jobs
from .schema import VALID_KEYS, JobConfig
from .search import SearchSpec, representative_values, sample_space
from .tree import copy_tree, nest, set_dotted

# Overrides that make any job tiny and CPU-sized while keeping its method and ablation switches,
# so a smoke run goes through the same code path as the real one. data.resolutions is adapted to
# the job's structure by _smoke_resolutions.
BUILTIN_SMOKE: dict[str, object] = {
    "model.backbone": "resnet_tiny",
    "model.small_input": True,
    "data.dataset": "synthetic",
    "data.root": None,
    "data.synthetic.num_train": 160,
    "data.synthetic.num_val": 40,
    "data.synthetic.min_size": 40,
    "data.synthetic.max_size": 56,
    "data.resolutions": [32, 24, 16],
    "data.loader_workers": 0,
    "train.epochs": 1,
    "train.max_steps_per_epoch": 2,
    "train.batch_size": 16,
    "eval.test_resolutions": [40, 32, 28, 24, 20, 16],  # 28 and 20 exercise interpolation
    "eval.calib_batches": 1,
    "eval.max_batches": 1,
    "eval.batch_size": 16,
    "resources.workers": 1,
    "resources.cpus_per_worker": 1,
    "resources.gpus_per_worker": 0,
    # A smoke run is on CPU, so it takes the CPU defaults even where the suite sets the GPU ones
    # (base/imagenet.yaml): bf16 autocast is several times slower than fp32 on CPUs without bf16 units.
    "train.precision": "fp32",
    "train.channels_last": False,
}



def job_from_dict(d: Mapping) -> JobConfig:
    """Nested dict (dotted keys also accepted) -> validated JobConfig; ConfigError names the key."""
    return _build_job(d).check_rules()


def _build_job(d: Mapping) -> JobConfig:
    """Types, choices and bounds checked, not the rules across fields: an I-Net set is checked before it is split."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"job: expected a mapping of config sections, got {show(d)}")
    return JobConfig.parse(nest(d))


def check_key(key) -> str | None:
    """None if key is a valid dotted config key, else the error message."""
    if isinstance(key, str) and key in VALID_KEYS:
        return None
    return unknown_key_message(str(key), VALID_KEYS)


def parse_overrides(overrides: Sequence[str]) -> dict[str, object]:
    """['train.epochs=2', 'data.resolutions=[64,32]'] -> {dotted key: YAML-parsed value}."""
    parsed: dict[str, object] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value, e.g. train.epochs=2")
        problem = check_key(key)
        if problem:
            raise ConfigError(f"override {item!r}: {problem}")
        try:
            parsed[key] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return parsed


def _is_overridden(key, overrides: Mapping[str, object]) -> bool:
    return any(str(key) == o or str(key).startswith(o + ".") for o in overrides)


@dataclass
class _Point:
    """One cell of cases × grid, before defaults, smoke and overrides."""
    case: str | None  # the case's name when cases are given as a mapping
    values: dict[str, object]  # dotted key -> value: the case's, then the grid's

    def describe(self) -> str:
        case = f"case '{self.case}' " if self.case else ""
        return f"{case}{show(self.values)}"


@dataclass
class _Expanded:
    point: _Point
    config: JobConfig
    inet_set: list[int] | None = None  # the I-Net set's resolutions when this is one of its rows
    hash: str = field(init=False)
    merged: list[str] = field(default_factory=list)  # other points that gave this same job

    def __post_init__(self):
        self.hash = config_hash(self.config)


def expand_jobs(job: Mapping, grid: Mapping | None = None, cases: Sequence | Mapping | None = None,
                overrides: Mapping[str, object] | None = None, smoke: bool = False,
                smoke_block: Mapping[str, object] | None = None, search: SearchSpec | None = None) -> list[Job]:
    """Every case × grid point (× search sample) as a named, validated Job.

    job: the merged partial JobConfig (nested); grid: dotted key -> non-empty list; cases: list of
    dotted overrides or a mapping name -> overrides (None: one case, no overrides); overrides:
    parsed CLI overrides, which replace any grid axis or case value on the same key. smoke: apply
    BUILTIN_SMOKE then smoke_block to every job. search: the suite's ``jobspec.search`` section, whose
    samples multiply the points like one more axis (an override on a searched key replaces the draws).
    Points that give the same config hash run once
    (e.g. a backbone axis under smoke, or a switch the method does not read). All bad points are
    reported in one ConfigError.
    """
    overrides = dict(overrides or {})
    grid = {k: v for k, v in (grid or {}).items() if not _is_overridden(k, overrides)}
    case_list = [(name, {k: v for k, v in values.items() if not _is_overridden(k, overrides)}
                  if isinstance(values, Mapping) else values) for name, values in _case_list(cases)]
    problems = _grid_problems(grid) + _case_problems(case_list)
    if smoke_block:
        problems += [f"smoke: {p}" for k in smoke_block if (p := check_key(k))]
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        _build_job(job)  # unknown keys and wrong types in the shared part are reported once
    except ConfigError as e:
        raise ConfigError(f"job: {e}") from None
    job = nest(job)  # every point's tree is then nested already, and parsed as it is
    samples = _search_samples(search, job, grid, case_list, overrides)

    points = [_Point(name, {**values, **dict(zip(grid, combo)), **sample})
              for name, values in case_list for combo in itertools.product(*grid.values()) for sample in samples]
    expanded, problems = [], []
    for point in points:
        try:
            tree = _point_tree(job, point, overrides, smoke, smoke_block or {})
            expanded += [_Expanded(point, cfg, inet_set) for cfg, inet_set in _split_inet_set(tree)]
        except ConfigError as e:
            problems.append(f"  - {point.describe()}: {e}")
    if problems:
        raise ConfigError(f"{len(problems)} of {len(points)} job points are invalid:\n" + "\n".join(problems))
    if not expanded:
        raise ConfigError("the suite expands to zero jobs (is 'cases' an empty list?)")
    if search is not None:
        _check_search_metric(search, expanded)
    return name_jobs(_deduplicate(expanded), grid, case_list, smoke=smoke, search=search)


def _search_samples(search: SearchSpec | None, job: Mapping, grid: Mapping, case_list,
                    overrides: Mapping) -> list[dict]:
    """The search's draws (dotted key -> value) minus overridden keys; [{}] without a search."""
    if search is None:
        return [{}]
    listed = set(grid) | {k for _, values in case_list for k in values}
    for key, domain in search.space.items():
        if key in listed:
            raise ConfigError(f"search.space: {key} is also a grid axis or a case value; "
                              "search it or list it, not both")
        for value in representative_values(domain):  # a distribution its key cannot take: one line, before any draw
            try:
                _build_job(_apply_layers(job, [{key: value}]))
            except ConfigError as e:
                raise ConfigError(f"search.space.{key}: {next(iter(domain))} can draw {show(value)}, which the "
                                  f"config refuses ({e})") from None
    return [{k: v for k, v in sample.items() if not _is_overridden(k, overrides)} for sample in sample_space(search)]


def _check_search_metric(search: SearchSpec, expanded: list[_Expanded]) -> None:
    """``acc1/r<res>`` needs every job of the search to train at that resolution (an I-Net row trains at one)."""
    res = search.metric_resolution()
    for item in expanded if res is not None else []:
        if res not in item.config.data.resolutions:
            raise ConfigError(f"search.metric {search.metric}: a job of {item.point.describe()} trains at "
                              f"{item.config.data.resolutions} px, not {res}; use acc1/mean (each I-Net row is "
                              "ranked at its own resolution) or a resolution every job trains at")


def _case_list(cases) -> list[tuple[str | None, dict]]:
    if cases is None:
        return [(None, {})]
    if isinstance(cases, Mapping):
        return [(str(name), values) for name, values in cases.items()]
    return [(None, values) for values in cases]


def _grid_problems(grid: Mapping) -> list[str]:
    problems = []
    for key, values in grid.items():
        if (p := check_key(key)):
            problems.append(f"grid: {p}")
        if not isinstance(values, list) or not values:
            problems.append(f"grid '{key}' must be a non-empty list of values, got {show(values)}")
    return problems


def _case_problems(case_list) -> list[str]:
    problems = []
    for i, (name, values) in enumerate(case_list):
        label = f"case '{name}'" if name is not None else f"case {i + 1}"
        if not isinstance(values, Mapping):
            problems.append(f"{label} must be a mapping of dotted keys to values, got {show(values)}")
            continue
        problems += [f"{label}: {p}" for k in values if (p := check_key(k))]
    return problems


def _point_tree(job: Mapping, point: _Point, overrides: Mapping, smoke: bool, smoke_block: Mapping) -> dict:
    layers = [point.values, overrides]
    if smoke:
        # The smoke resolutions follow the structure of the job as it would run without smoke.
        real = JobConfig.parse(_apply_layers(job, layers))
        layers = [point.values, {**_smoke_overrides(real), **smoke_block}, overrides]
    return _apply_layers(job, layers)


def _apply_layers(job: Mapping, layers: Sequence[Mapping]) -> dict:
    tree = copy_tree(job)
    for layer in layers:
        for key, value in layer.items():
            set_dotted(tree, key, value)
    return tree


def _smoke_overrides(cfg: JobConfig) -> dict[str, object]:
    return {**BUILTIN_SMOKE, "data.resolutions": _smoke_resolutions(cfg)}


def _smoke_resolutions(cfg: JobConfig) -> list[int]:
    """Tiny resolutions with the same structure as the job's own."""
    res = cfg.data.resolutions
    if cfg.method.name == "individual":
        return [32, 24, 16]  # still an I-Net set of three rows
    if len(res) == 1:
        return [32]
    if len(set(res)) == 1:
        return [32, 32, 32]  # RS-Nets "single resolution": several copies of one size
    return [32, 24, 16]


def _split_inet_set(tree: Mapping) -> list[tuple[JobConfig, list[int] | None]]:
    """One validated config, or one per resolution for an I-Net set (method.name=individual)."""
    cfg = JobConfig.parse(tree)  # nested by _apply_layers
    resolutions = list(cfg.data.resolutions)
    if cfg.method.name != "individual" or len(resolutions) <= 1:
        return [(cfg.check_rules(), None)]  # just parsed: the rules across fields are what is left
    # Each row alone cannot show that the set is ordered and positive, so check the set as a
    # multi-resolution config would be checked.
    as_set = copy.deepcopy(cfg)
    as_set.method.name = "parallel"
    as_set.validate()
    # Every row of the set gets the columns of the multi-resolution set, so the rows line up.
    columns = cfg.test_resolutions()
    rows = []
    for r in resolutions:
        row = copy.deepcopy(cfg)
        row.data.resolutions = [r]
        if row.eval.test_resolutions is None:
            row.eval.test_resolutions = list(columns)
        rows.append((row.validate(), resolutions))
    return rows


def _deduplicate(expanded: list[_Expanded]) -> list[_Expanded]:
    """Keep one job per config hash: points that compute the same thing (e.g. an I-Net listed under
    two distillation variants, whose distillation switch it never reads) run once. The first keeps
    the descriptions of the others in ``merged``."""
    first_by_hash: dict[str, _Expanded] = {}
    for item in expanded:
        first = first_by_hash.setdefault(item.hash, item)
        if first is not item and item.point.describe() != first.point.describe():
            first.merged.append(item.point.describe())
    return list(first_by_hash.values())


def smoke_changes(smoke_block: Mapping[str, object] | None = None) -> dict[str, object]:
    """What ``--smoke`` sets on every job (before the job's structure picks its resolutions)."""
    return {**BUILTIN_SMOKE, **(smoke_block or {})}
