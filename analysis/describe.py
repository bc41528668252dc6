"""``resolab describe``: parameter count and MAdds of a method's model, as in RS-Nets Table 2."""
from __future__ import annotations

from backbones.complexity import count_madds, count_params
from jobspec import JobConfig
from methods import build_method


def describe(cfg: JobConfig, num_classes: int) -> dict:
    """A set of I-Nets counts all its models (one per resolution); one switchable model counts once."""
    resolutions = list(cfg.data.resolutions)
    individual = cfg.method.name == "individual"
    models = []
    for res in (resolutions if individual else [None]):
        models.append((res, build_method(cfg.method, cfg.model, [res] if res else resolutions).build(num_classes)))
    total = sum(count_params(net) for _, net in models)
    madds = {}
    for r in resolutions:
        net = next(n for res, n in models if res in (None, r))
        madds[str(r)] = count_madds(net, r)
    return {"backbone": cfg.model.backbone, "method": cfg.method.name, "resolutions": resolutions,
            "num_classes": num_classes, "models": len(models), "total_params": total,
            "total_params_M": round(total / 2**20, 2), "madds": madds}
