"""A suite's ``search:`` section: a Ray Tune search space sampled into ordinary jobs.

    search:
      space:                                   # any dotted config key -> one distribution
        train.lr: {loguniform: [0.003, 0.3]}
        train.weight_decay: {choice: [0.0, 1.0e-4, 5.0e-4]}
      num_samples: 6                           # configurations drawn, the same ones for every case
      scheduler: {name: asha, grace_period: 1, reduction_factor: 2}   # or median, or none
      metric: acc1/mean                        # top-1 over the training resolutions; or acc1/r<res>
      mode: max
      seed: 0                                  # a rerun draws the same configurations
      repeat: 1                                # > 1: each search's best configuration over this many seeds

The draws happen when the suite is read (Tune's own distributions, seeded), so each sample is a job
with its own config hash: a rerun trains nothing new, ``--dry-run`` and ``status`` list the samples, and
a finished sample is reused by any suite that holds the same job. Every case × grid point (and every
row of an I-Net set, which is tuned at its own resolution) gets the same samples: a search of the same
size per method, paired on the same configurations. Which jobs form one search, and how the
scheduler stops them, is ``orchestrator.cluster.search_scheduler``'s business.

``uniform``, ``loguniform`` ([low, high]) and ``randint`` ([low, high), high excluded, as numpy's and
Tune's) draw numbers; floats are kept to 4 significant digits, so job names stay readable.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, message_from, show, unknown_key_message
from .schema import VALID_KEYS, Float, Int, PositiveInt

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")
METRIC = re.compile(r"^acc1/(mean|r([1-9][0-9]*))$")
SIGNIFICANT_DIGITS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SchedulerSpec(_Strict):
    name: Literal["asha", "median", "none"] = "asha"
    # What a trial's progress is measured in: epochs, or compute (multiply-adds x images over the
    # training resolutions, in units of 1e12), so that cheap and expensive samples meet at equal compute.
    time_attr: Literal["epoch", "compute"] = "epoch"
    grace_period: Annotated[Float, Field(gt=0)] = 1.0  # in time_attr's unit: no stop before it
    reduction_factor: Annotated[Float, Field(gt=1)] = 2.0  # ASHA: keep 1 / reduction_factor per rung
    min_samples_required: PositiveInt = 3  # median: results of other trials needed before a stop
    max_t: Annotated[Float, Field(gt=0)] | None = None  # ASHA's top rung; default: the search's longest job


class SearchSpec(_Strict):
    space: dict[str, object]
    num_samples: PositiveInt
    scheduler: SchedulerSpec = SchedulerSpec()
    metric: str = "acc1/mean"
    mode: Literal["max", "min"] = "max"
    seed: Int = 0
    repeat: PositiveInt = 1

    def metric_resolution(self) -> int | None:
        """The resolution of ``acc1/r<res>``; None for ``acc1/mean``."""
        found = METRIC.match(self.metric)
        return int(found.group(2)) if found and found.group(2) else None


SEARCH_KEYS = ("space", "num_samples", "metric", "mode", "seed", "repeat", "scheduler",
               *(f"scheduler.{k}" for k in SchedulerSpec.model_fields))


@dataclass(frozen=True)
class SearchMembership:
    """What a job is to its search: the search it belongs to (one per case × grid point, and I-Net
    row), how that search ranks its jobs, and whether the job is a sample or a repeat of the best."""
    group: str
    metric: str
    mode: str
    role: str  # SAMPLE or REPEAT


SAMPLE, REPEAT = "sample", "repeat"


def parse_search(raw) -> SearchSpec | None:
    """The ``search:`` section (None when absent); every problem is one ConfigError naming the key."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"search: expected a mapping with space and num_samples, got {show(raw)}")
    try:
        spec = SearchSpec.model_validate(dict(raw))
    except ValidationError as e:
        message = message_from(e, SearchSpec, raw, SEARCH_KEYS)
        raise ConfigError(f"search: {message}" if message.startswith("unknown") else f"search.{message}") from None
    if not METRIC.match(spec.metric):
        raise ConfigError("search.metric: expected acc1/mean or acc1/r<resolution> (e.g. acc1/r32), "
                          f"got {show(spec.metric)}")
    if not spec.space:
        raise ConfigError("search.space is empty: give at least one key, e.g. train.lr: {loguniform: [0.003, 0.3]}")
    for key, domain in spec.space.items():
        if key not in VALID_KEYS:
            raise ConfigError(f"search.space: {unknown_key_message(str(key), VALID_KEYS)}")
        _check_domain(key, domain)
    return spec


def _check_domain(key: str, domain) -> None:
    where = f"search.space.{key}"
    if not isinstance(domain, Mapping) or len(domain) != 1:
        raise ConfigError(f"{where}: expected one distribution such as {{loguniform: [0.003, 0.3]}} "
                          f"({', '.join(DISTRIBUTIONS)}), got {show(domain)}")
    (kind, args), = domain.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: {unknown_key_message(str(kind), DISTRIBUTIONS, 'distribution')}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: choice takes a non-empty list of values, got {show(args)}")
        return
    number = int if kind == "randint" else (int, float)
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, number) and not isinstance(a, bool) for a in args)):
        what = "two integers" if kind == "randint" else "two numbers"
        raise ConfigError(f"{where}: {kind} takes [low, high], {what}, got {show(args)}")
    low, high = args
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got {show(args)}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {show(args)}")


def representative_values(domain: Mapping) -> list:
    """Values a distribution can draw that together show whether its key takes them (the bounds, and a
    fraction for the continuous ones), checked against the schema before anything is drawn."""
    (kind, args), = domain.items()
    if kind == "choice":
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    return [float(args[0]), float(args[1]), _round((args[0] + args[1]) / 2 + 1e-3 * (args[1] - args[0]))]


def sample_space(spec: SearchSpec) -> list[dict[str, object]]:
    """``num_samples`` configurations (dotted key -> value), drawn with Tune's distributions from one
    generator seeded by ``spec.seed``, key by key in the order the space lists them."""
    import numpy as np
    from ray.tune.search import sample as tune_sample  # only for suites with a search: Ray takes a second

    domains = {key: _tune_domain(tune_sample, domain) for key, domain in spec.space.items()}
    rng = np.random.default_rng(spec.seed)
    return [{key: _plain(domain.sample(random_state=rng)) for key, domain in domains.items()}
            for _ in range(spec.num_samples)]


def _tune_domain(tune_sample, domain: Mapping):
    (kind, args), = domain.items()
    if kind == "choice":
        return tune_sample.choice(list(args))
    return {"uniform": tune_sample.uniform, "loguniform": tune_sample.loguniform,
            "randint": tune_sample.randint}[kind](*args)


def _plain(value):
    """numpy scalars as the YAML types a config takes; floats to SIGNIFICANT_DIGITS."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    return _round(value) if isinstance(value, float) else value


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
