"""Suite files (``experiments/*.yaml``) → validated, named, hashed jobs.

A suite file describes a grid of jobs::

    # Header comment: what it reproduces, the exact command, the expected runtime.
    name: rsnets_table5                  # suite name = MLflow experiment name; required unless inherited
    description: "RS-Nets Table 5: MRED variants, ResNet-18"
    extends: base/imagenet_resnet.yaml   # optional; relative to THIS file; or a list; chains allowed
    job:                                 # a partial JobConfig (see orchestrator.schema)
      model: {backbone: resnet18}
      train: {epochs: 120}
    grid:                                # dotted key -> list of values; cartesian product
      method.distill: [full, vanilla, from_models, from_largest]
      train.seed: [0, 1]
    cases:                               # list of dotted overrides, or a mapping name -> overrides;
      - {method.name: individual}        # every case is crossed with the grid
      - {method.name: rsnet, method.distill: full}
    smoke:                               # dotted overrides on top of BUILTIN_SMOKE when smoke=True
      data.resolutions: [32, 24, 16]

Layering, later wins:

1. ``extends`` bases in order, then the file itself: ``job`` deep-merges (lists replace), ``grid``
   and ``smoke`` merge key-wise, ``cases`` of a child replace the parent's (``cases:`` left empty
   removes them), ``name`` and ``description`` replace.
2. For each job: ``job`` ⊕ case ⊕ grid point ⊕ (smoke: BUILTIN_SMOKE ⊕ the ``smoke:`` block)
   ⊕ CLI overrides.

A CLI override (``--set key=value``, value parsed as YAML) wins over everything the suite says
about that key: a grid axis on that key (or under it) is replaced by the single override value, and
the key is dropped from every case. Cases that thereby become identical run once.

I-Net sets: a point with ``method.name: individual`` and k > 1 training resolutions becomes k jobs,
one per resolution, sharing ``Job.group`` and one list of test resolutions.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.schema import ConfigError, JobConfig

__all__ = [
    "BUILTIN_SMOKE", "ConfigError", "Job", "Suite", "config_hash", "expand_jobs", "flatten",
    "job_from_dict", "load_suite", "parse_overrides", "unflatten",
]

TOP_LEVEL_KEYS = ("name", "description", "extends", "job", "grid", "cases", "smoke")

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
}

# Fields that do not change what a job computes: where it runs, how data is read, its label. A job
# that differs only in these is the same job (same checkpoint, not trained twice, reused across suites).
# data.root joins them for the synthetic dataset only, whose content its own settings define; an
# ImageFolder root names the data itself.
_NOT_HASHED = (("resources",), ("data", "loader_workers"), ("tag",))
# Method switches that a method reads; the others are inert for it and must not split hashes.
_METHOD_FIELDS = {
    "individual": ("name",),
    "parallel": ("name", "bn"),
    "rsnet": ("name", "bn", "distill"),
    "san": ("name", "bn", "scale_distill", "meta_hidden", "convs"),
}

# Keys that are already part of every job name's prefix.
_NAME_PREFIX_KEYS = ("method.name", "model.backbone")
_SHORT_LABELS = {"data.resolutions": "res", "eval.test_resolutions": "test_res"}


@dataclass
class Job:
    name: str  # unique within the suite, filesystem-safe
    config: JobConfig
    hash: str  # config_hash(config)
    point: dict[str, object]  # dotted keys that vary across the suite -> this job's values
    group: str  # I-Net set name shared by its per-resolution jobs; otherwise == name


@dataclass
class Suite:
    name: str
    description: str
    path: Path
    jobs: list[Job]
    header: str = ""  # the file's leading comment block, without the '# '

    def table(self) -> str:
        """A fixed-width table of the jobs, for --dry-run."""
        point_keys = [k for k in (self.jobs[0].point if self.jobs else {})
                      if k not in _NAME_PREFIX_KEYS and k != "data.resolutions"]
        header = ["name", "method", "backbone", "resolutions", *point_keys, "hash"]
        rows = [[job.name, job.config.method.name, job.config.model.backbone,
                 _cell(job.config.data.resolutions), *(_cell(job.point.get(k)) for k in point_keys),
                 job.hash] for job in self.jobs]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        title = f"{self.name}: {len(self.jobs)} job{'s' * (len(self.jobs) != 1)} ({self.path})"
        return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])


# --------------------------------------------------------------------------------------------
# Hashing and flattening


def config_hash(cfg: JobConfig) -> str:
    """12 hex chars identifying what a job computes; stable across processes and machines."""
    d = cfg.to_dict()
    for path in _NOT_HASHED:
        node = d
        for part in path[:-1]:
            node = node[part]
        node.pop(path[-1], None)
    if cfg.data.dataset == "synthetic":
        d["data"].pop("root")
    d["method"] = {k: v for k, v in d["method"].items() if k in _METHOD_FIELDS.get(cfg.method.name, d["method"])}
    if cfg.model.backbone != "resnet_tiny":
        d["model"].pop("width")
    canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def flatten(cfg: JobConfig | Mapping) -> dict[str, object]:
    """Dotted key -> leaf value (lists kept as lists), e.g. for MLflow params."""
    tree = cfg.to_dict() if isinstance(cfg, JobConfig) else cfg
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            flat[key] = value
    return flat


def unflatten(flat: Mapping[str, object]) -> dict:
    """The inverse of flatten: dotted keys -> nested dict (job_from_dict accepts it)."""
    tree: dict = {}
    for key, value in flat.items():
        _set_dotted(tree, key, value)
    return tree


# --------------------------------------------------------------------------------------------
# Strict building of the typed config


def job_from_dict(d: Mapping) -> JobConfig:
    """Nested dict (dotted keys also accepted) -> validated JobConfig; ConfigError names the key."""
    return _build_job(d).validate()


def _build_job(d: Mapping) -> JobConfig:
    """Type-checked but not value-validated: an I-Net set is checked before it is split."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"job: expected a mapping of config sections, got {_show(d)}")
    return _build_dataclass(JobConfig, _nest(d), prefix="")


def _build_dataclass(cls: type, mapping: Mapping, prefix: str):
    hints = _field_types(cls)
    kwargs = {}
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise ConfigError(_unknown_key_message(key))
        field_type = hints[name]
        if dataclasses.is_dataclass(field_type):
            if value is None:  # an empty section, e.g. "train:" with nothing under it
                value = {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a mapping of {key} settings, got {_show(value)}")
            kwargs[name] = _build_dataclass(field_type, value, prefix=f"{key}.")
        else:
            kwargs[name] = _convert_field(key, value, field_type)
    return cls(**kwargs)


@functools.cache
def _field_types(cls: type) -> dict[str, object]:
    # schema.py uses postponed annotations, so the field types are strings until resolved here.
    return typing.get_type_hints(cls)


class _Mismatch(Exception):
    """A value does not fit a field type; turned into a ConfigError naming the key."""


# PyYAML follows YAML 1.1, where "1e-4" (no dot) is a string; YAML 1.2 and every user read it as a
# number, so float fields accept exactly that spelling.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$")


def _convert_field(key: str, value, field_type):
    try:
        return _convert(value, field_type)
    except _Mismatch:
        got = "null" if value is None else f"{_show(value)} ({type(value).__name__})"
        raise ConfigError(f"{key}: expected {_type_name(field_type)}, got {got}") from None


def _convert(value, tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, inner)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item_type,) = typing.get_args(tp)
        return [_convert(v, item_type) for v in value]
    if tp is bool and isinstance(value, bool):
        return value
    if isinstance(value, bool):  # bool is an int subclass; true for "epochs" is a mistake
        raise _Mismatch
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)):
            return float(value)  # 1 and 1.0 must hash the same
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            return float(value)
    elif tp is str and isinstance(value, str):
        return value
    raise _Mismatch


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(inner) + " or null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "bool (true/false)"}.get(tp, getattr(tp, "__name__", str(tp)))


@functools.cache
def _valid_keys() -> tuple[str, ...]:
    """Every dotted key a user may write: sections and leaves."""
    def walk(cls, prefix):
        for name, tp in _field_types(cls).items():
            yield prefix + name
            if dataclasses.is_dataclass(tp):
                yield from walk(tp, f"{prefix}{name}.")
    return tuple(walk(JobConfig, ""))


def _unknown_key_message(key: str, valid: Sequence[str] | None = None, what: str = "key") -> str:
    valid = _valid_keys() if valid is None else valid
    close = difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"unknown {what} '{key}' — did you mean '{close[0]}'?"
    return f"unknown {what} '{key}'; valid: {', '.join(valid)}"


def _check_key(key) -> str | None:
    """None if key is a valid dotted config key, else the error message."""
    if isinstance(key, str) and key in _valid_keys():
        return None
    return _unknown_key_message(str(key))


# --------------------------------------------------------------------------------------------
# Nested-dict helpers


def _set_dotted(tree: dict, key: str, value) -> None:
    """tree[a][b][c] = value for key 'a.b.c'; a mapping value merges into an existing mapping."""
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parents[:i + 1])
            raise ConfigError(f"cannot set '{key}': '{where}' is {_show(child)}, not a mapping")
        node = child
    if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
        node[leaf] = _deep_merge(node[leaf], _nest(value))
    else:
        node[leaf] = _nest(value) if isinstance(value, Mapping) else copy.deepcopy(value)


def _nest(mapping: Mapping) -> dict:
    """Expand dotted keys ({'train.epochs': 2} -> {'train': {'epochs': 2}}) at every level."""
    out: dict = {}
    for key, value in mapping.items():
        _set_dotted(out, str(key), value)
    return out


def _deep_merge(base: Mapping, over: Mapping) -> dict:
    """Mappings merge recursively, anything else (lists included) is replaced by `over`."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _lookup(tree: Mapping, key: str):
    node = tree
    for part in key.split("."):
        node = node[part]
    return node


# --------------------------------------------------------------------------------------------
# Reading suite files


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping_once(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice in one mapping", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_once)


def _read_suite_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read suite file {path}: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: YAML error: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}, got {_show(data)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}: {_unknown_key_message(str(key), TOP_LEVEL_KEYS, 'top-level key')}")
    _check_sections(path, data)
    return data


def _check_sections(path: Path, data: Mapping) -> None:
    expected = {"name": str, "description": str, "job": Mapping, "grid": Mapping, "smoke": Mapping,
                "cases": (list, Mapping), "extends": (str, list)}
    for key, kind in expected.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            names = {str: "a string", Mapping: "a mapping", (list, Mapping): "a list or a mapping",
                     (str, list): "a path or a list of paths"}
            raise ConfigError(f"{path}: '{key}' must be {names[kind]}, got {_show(value)}")


def _read_header(path: Path) -> str:
    """The leading block of '#' lines, without the '# '."""
    lines: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            if stripped or lines:
                break
            continue
        text = stripped[1:]
        lines.append(text[1:] if text.startswith(" ") else text)
    return "\n".join(lines).strip("\n")


def _load_layers(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file merged over its `extends` bases (recursively, in order)."""
    if path in chain:
        raise ConfigError("extends cycle: " + " -> ".join(str(p) for p in (*chain, path)))
    data = _read_suite_file(path)
    entries = data.get("extends") or []
    merged: dict = {}
    for entry in [entries] if isinstance(entries, str) else entries:
        if not isinstance(entry, str):
            raise ConfigError(f"{path}: extends entries must be paths, got {_show(entry)}")
        base = (path.parent / entry).resolve()
        if not base.is_file():
            raise ConfigError(f"{path}: extends '{entry}', but {base} does not exist")
        merged = _merge_layer(merged, _load_layers(base, (*chain, path)))
    return _merge_layer(merged, data)


def _merge_layer(base: Mapping, child: Mapping) -> dict:
    out = {k: v for k, v in base.items() if k != "extends"}
    for key, value in child.items():
        if key == "job":
            out["job"] = _deep_merge(out.get("job", {}), _nest(value or {}))
        elif key in ("grid", "smoke"):
            out[key] = {**out.get(key, {}), **(value or {})}
        elif key != "extends":
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Overrides


def parse_overrides(overrides: Sequence[str]) -> dict[str, object]:
    """['train.epochs=2', 'data.resolutions=[64,32]'] -> {dotted key: YAML-parsed value}."""
    parsed: dict[str, object] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value, e.g. train.epochs=2")
        problem = _check_key(key)
        if problem:
            raise ConfigError(f"override {item!r}: {problem}")
        try:
            parsed[key] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return parsed


def _is_overridden(key, overrides: Mapping[str, object]) -> bool:
    return any(str(key) == o or str(key).startswith(o + ".") for o in overrides)


# --------------------------------------------------------------------------------------------
# Expansion: base ⊕ case ⊕ grid point → jobs


@dataclass
class _Point:
    """One cell of cases × grid, before defaults, smoke and overrides."""
    case: str | None  # the case's name when cases are given as a mapping
    values: dict[str, object]  # dotted key -> value: the case's, then the grid's

    def describe(self) -> str:
        case = f"case '{self.case}' " if self.case else ""
        return f"{case}{_show(self.values)}"


@dataclass
class _Expanded:
    point: _Point
    config: JobConfig
    inet_set: list[int] | None = None  # the I-Net set's resolutions when this is one of its rows
    hash: str = field(init=False)

    def __post_init__(self):
        self.hash = config_hash(self.config)

    def identity(self):
        return self.point.case, self.point.values, self.config.data.resolutions if self.inet_set else None


def expand_jobs(job: Mapping, grid: Mapping | None = None, cases: Sequence | Mapping | None = None,
                overrides: Mapping[str, object] | None = None, smoke: bool = False,
                smoke_block: Mapping[str, object] | None = None) -> list[Job]:
    """Every case × grid point as a named, validated Job.

    job: the merged partial JobConfig (nested); grid: dotted key -> non-empty list; cases: list of
    dotted overrides or a mapping name -> overrides (None: one case, no overrides); overrides:
    parsed CLI overrides, which replace any grid axis or case value on the same key. smoke: apply
    BUILTIN_SMOKE then smoke_block to every job; jobs that smoke makes identical (e.g. a backbone
    axis) run once. Without smoke, two different points giving the same config are an error.
    All bad points are reported in one ConfigError.
    """
    overrides = dict(overrides or {})
    grid = {k: v for k, v in (grid or {}).items() if not _is_overridden(k, overrides)}
    case_list = [(name, {k: v for k, v in values.items() if not _is_overridden(k, overrides)}
                  if isinstance(values, Mapping) else values) for name, values in _case_list(cases)]
    problems = _grid_problems(grid) + _case_problems(case_list)
    if smoke_block:
        problems += [f"smoke: {p}" for k in smoke_block if (p := _check_key(k))]
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        _build_job(job)  # unknown keys and wrong types in the shared part are reported once
    except ConfigError as e:
        raise ConfigError(f"job: {e}") from None

    points = [_Point(name, {**values, **dict(zip(grid, combo))})
              for name, values in case_list for combo in itertools.product(*grid.values())]
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
    return _name_jobs(_deduplicate(expanded, collapse=True), grid, case_list)


def _case_list(cases) -> list[tuple[str | None, dict]]:
    if cases is None:
        return [(None, {})]
    if isinstance(cases, Mapping):
        return [(str(name), values) for name, values in cases.items()]
    return [(None, values) for values in cases]


def _grid_problems(grid: Mapping) -> list[str]:
    problems = []
    for key, values in grid.items():
        if (p := _check_key(key)):
            problems.append(f"grid: {p}")
        if not isinstance(values, list) or not values:
            problems.append(f"grid '{key}' must be a non-empty list of values, got {_show(values)}")
    return problems


def _case_problems(case_list) -> list[str]:
    problems = []
    for i, (name, values) in enumerate(case_list):
        label = f"case '{name}'" if name is not None else f"case {i + 1}"
        if not isinstance(values, Mapping):
            problems.append(f"{label} must be a mapping of dotted keys to values, got {_show(values)}")
            continue
        problems += [f"{label}: {p}" for k in values if (p := _check_key(k))]
    return problems


def _point_tree(job: Mapping, point: _Point, overrides: Mapping, smoke: bool, smoke_block: Mapping) -> dict:
    layers = [point.values, overrides]
    if smoke:
        # The smoke resolutions follow the structure of the job as it would run without smoke.
        real = _build_job(_apply_layers(job, layers))
        layers = [point.values, {**_smoke_overrides(real), **smoke_block}, overrides]
    return _apply_layers(job, layers)


def _apply_layers(job: Mapping, layers: Sequence[Mapping]) -> dict:
    tree = copy.deepcopy(dict(job))
    for layer in layers:
        for key, value in layer.items():
            _set_dotted(tree, key, value)
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
    cfg = _build_job(tree)
    resolutions = list(cfg.data.resolutions)
    if cfg.method.name != "individual" or len(resolutions) <= 1:
        return [(cfg.validate(), None)]
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


def _deduplicate(expanded: list[_Expanded], collapse: bool) -> list[_Expanded]:
    """Keep one job per config hash: points that compute the same thing (e.g. an I-Net listed under
    two distillation variants, whose distillation switch it never reads) run once."""
    first_by_hash: dict[str, _Expanded] = {}
    kept, problems = [], []
    for item in expanded:
        first = first_by_hash.setdefault(item.hash, item)
        if first is item:
            kept.append(item)
        elif not collapse and first.identity() != item.identity():
            problems.append(f"  - {_describe(first)} and {_describe(item)} give the same job (hash {item.hash})")
    if problems:
        raise ConfigError("duplicate jobs; change or remove one of each pair:\n" + "\n".join(problems))
    return kept


def _describe(item: _Expanded) -> str:
    row = f" row data.resolutions={item.config.data.resolutions}" if item.inet_set else ""
    return item.point.describe() + row


# --------------------------------------------------------------------------------------------
# Names


def _name_jobs(expanded: list[_Expanded], grid: Mapping, case_list) -> list[Job]:
    named_cases = sum(name is not None for name, _ in case_list) > 1
    axes = list(dict.fromkeys([k for _, values in case_list for k in values] + list(grid)))
    inet_rows = any(e.inet_set for e in expanded)
    candidates = axes + (["data.resolutions"] if inet_rows and "data.resolutions" not in axes else [])
    trees = [e.config.to_dict() for e in expanded]
    varying = [k for k in candidates if len({_canonical(_lookup(t, k)) for t in trees}) > 1]
    # With named cases the case name stands for the keys that only the cases set.
    case_only = {k for _, values in case_list for k in values} - set(grid) if named_cases else set()
    name_keys = [k for k in varying if k not in _NAME_PREFIX_KEYS and k not in case_only]
    # The resolutions label every job when the suite varies them; otherwise only the rows of an
    # I-Net set carry their one resolution, and the set's group name leaves it out.
    res_is_axis = "data.resolutions" in name_keys and "data.resolutions" in axes
    name_keys = [k for k in name_keys if k != "data.resolutions"]
    labels = _short_labels([*name_keys, "data.resolutions"])

    def name_of(item: _Expanded, point: dict, resolutions: list[int] | None) -> str:
        parts = [item.config.method.name, item.config.model.backbone]
        if named_cases:
            parts.append(item.point.case)
        parts += [f"{labels[k]}={_name_value(point[k])}" for k in name_keys]
        if resolutions is not None:
            parts.append(f"{labels['data.resolutions']}={_name_value(resolutions)}")
        return _filesystem_safe("-".join(parts))

    jobs = []
    for item, tree in zip(expanded, trees):
        point = {k: _lookup(tree, k) for k in varying}
        resolutions = item.config.data.resolutions
        name = name_of(item, point, resolutions if res_is_axis or item.inet_set else None)
        group = name
        if item.inet_set:
            group = name_of(item, point, item.inet_set if res_is_axis else None)
        jobs.append(Job(name=name, config=item.config, hash=item.hash, point=point, group=group))
    return _make_names_unique(jobs)


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


def _cell(value) -> str:
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    return _scalar(value)


def _scalar(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return _canonical(value)
    return repr(value) if isinstance(value, float) else str(value)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def _show(value) -> str:
    """A value as the user wrote it in YAML, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


# --------------------------------------------------------------------------------------------
# Entry point


def load_suite(path: str | Path, overrides: Sequence[str] = (), smoke: bool = False) -> Suite:
    """Read, merge, expand and validate a suite file; every problem is a ConfigError naming the file.

    overrides: CLI ``key=value`` strings; an override replaces a grid axis (or case value) on the
    same key by that single value. smoke: make every job tiny (BUILTIN_SMOKE, then the file's
    ``smoke:`` block, then the overrides). The real suite is validated even for a smoke run.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"suite file {path} does not exist")
    raw = _load_layers(path)
    name = raw.get("name")
    if not name:
        raise ConfigError(f"{path}: no 'name' (give one here or in a file it extends)")
    parsed_overrides = parse_overrides(overrides)
    args = dict(job=raw.get("job", {}), grid=raw.get("grid"), cases=raw.get("cases"), overrides=parsed_overrides)
    try:
        jobs = expand_jobs(**args)
        if smoke:
            jobs = expand_jobs(**args, smoke=True, smoke_block=raw.get("smoke"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return Suite(name=name, description=raw.get("description") or "", path=path, jobs=jobs,
                 header=_read_header(path))
