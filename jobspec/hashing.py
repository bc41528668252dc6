"""The config hash: 12 hex characters identifying what a job computes.

A job that differs only in where it runs, how data is read or its label is the same job (same
checkpoint, not trained twice, reused across suites). The synthetic dataset's ``data.root`` is
ignored too, since its content is defined by its own settings; an ImageFolder root names the data
itself and is hashed. Of the ``method:`` section, only the switches the method declares (in
``methods.catalog``) count, and of the ``model:`` section only what the backbone reads.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping

from backbones.catalog import ALWAYS_READ, BACKBONES
from methods.catalog import METHODS

NOT_HASHED = ("resources", "data.loader_workers", "tag")


def hashed_part(tree: Mapping) -> dict:
    """The part of a nested config dict that the hash covers. Leaf values may be of any type (e.g.
    MLflow param strings); only method.name, model.backbone and data.dataset are read."""
    d = copy.deepcopy(dict(tree))
    for key in NOT_HASHED:
        *parents, leaf = key.split(".")
        node = d
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    data, model, method = d.get("data", {}), d.get("model", {}), d.get("method", {})
    if data.get("dataset") == "synthetic":
        data.pop("root", None)
    entry = METHODS.get(method.get("name"))
    if entry is not None:
        d["method"] = {k: v for k, v in method.items() if k == "name" or k in entry.options.model_fields}
    backbone = BACKBONES.get(model.get("backbone"))
    if backbone is not None:
        d["model"] = {k: v for k, v in model.items() if k in ALWAYS_READ or k in backbone.reads}
    return d


def config_hash(cfg) -> str:
    """12 hex chars identifying what a job computes; stable across processes and machines."""
    canonical = json.dumps(hashed_part(cfg.to_dict()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
