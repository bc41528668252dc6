"""The Total Params and MAdds cells: ``resolab describe`` of the model a run trained."""
from __future__ import annotations

import functools

import pandas as pd
import yaml

from analysis import plots
from analysis.tables.runs import resolutions_of
from analysis.tables.model import MISSING, Notes
from jobspec import DataConfig, JobConfig, MethodConfig, ModelConfig

# orchestrator.data.loaders builds the synthetic dataset with this many classes when data.num_classes is null.
SYNTHETIC_DEFAULT_CLASSES = 10


def num_classes_of(run: pd.Series) -> tuple[int, str | None]:
    """Classes the run's model had: the ``data.num_classes`` param; when that is null, a
    ``num_classes`` metric if a run logged one; else the synthetic dataset's default (10); else an
    ImageNet-sized guess of 1000, returned with a footnote."""
    param = run.get("params.data.num_classes")
    if isinstance(param, str) and param != "null":
        return int(param), None
    metric = run.get("metrics.num_classes")
    if metric is not None and pd.notna(metric):
        return int(metric), None
    if run.get("params.data.dataset") == "synthetic":
        return SYNTHETIC_DEFAULT_CLASSES, None
    return 1000, "Total Params assume 1000 classes: data.num_classes is not set in the runs"


@functools.lru_cache(maxsize=None)
def _describe(model: tuple[tuple[str, object], ...], method: tuple[tuple[str, object], ...],
              resolutions: tuple[int, ...], num_classes: int) -> dict:
    from analysis.describe import describe  # builds models: torch only when a table needs sizes

    cfg = JobConfig(model=ModelConfig(**dict(model)), method=MethodConfig(**dict(method)),
                    data=DataConfig(resolutions=list(resolutions)))
    return describe(cfg, num_classes)


def _section(run: pd.Series, section: str, fields) -> tuple[tuple[str, object], ...]:
    """The run's ``section.*`` params as config values (params are YAML-readable strings)."""
    values = ((name, run.get(f"params.{section}.{name}")) for name in fields)
    return tuple((name, yaml.safe_load(value)) for name, value in values if isinstance(value, str))


def describe_run(run: pd.Series, notes: Notes, method: str | None = None,
                 resolutions: list[int] | None = None, **model) -> dict:
    """``resolab describe`` of the run's model (or of ``method`` at ``resolutions`` on its backbone,
    with ``model`` settings such as ``width_mult`` replaced)."""
    classes, footnote = num_classes_of(run)
    if footnote:
        notes.add(footnote)
    p = run.get
    method_items = dict(_section(run, "method", MethodConfig.model_fields))
    if method:
        method_items["name"] = method
    try:
        model_items = {**dict(_section(run, "model", ModelConfig.model_fields)), **model}
        return _describe(tuple(model_items.items()), tuple(method_items.items()),
                         tuple(resolutions or resolutions_of(run)), classes)
    except Exception as exc:  # noqa: BLE001 — a size we cannot count must not cost the accuracies
        notes.add(f"note: cannot describe {p('params.model.backbone')} / {method or p('params.method.name')}: {exc}")
        return {"madds": {}, "total_params_M": None}


def params_text(info: dict) -> str:
    return MISSING if info["total_params_M"] is None else f"{info['total_params_M']:.2f}M"


def madds_text(madds: dict, resolution: int) -> str:
    return plots.format_madds(madds[str(resolution)]) if str(resolution) in madds else MISSING
