"""The config hash: 12 hex characters identifying what a job computes.

A job that differs only in where it runs, how data is read or its label is the same job (same
checkpoint, not trained twice, reused across suites). The synthetic dataset's ``data.root`` is
ignored too, since its content is defined by its own settings; an ImageFolder root names the data
itself and is hashed. Of the ``method:`` section, only the switches the method declares (in
``methods.catalog``) count, and of the ``model:`` section only what the backbone reads. A
``model.init`` file enters by its sha256, not its path: moving the file keeps the hash, and new
weights under the old name make a new job.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping

from backbones.catalog import ALWAYS_READ, backbone_entry
from methods.catalog import METHODS, san_meta_stem

from .errors import ConfigError
from .tree import copy_tree, flatten, nest, param_value

NOT_HASHED = ("resources", "data.loader_workers", "tag")
# Keys added after jobs were first hashed enter the hash only when set away from the value that gives
# the older behaviour, so every job that existed before keeps its hash (and its finished runs).
ADDED_LATER = {"eval.gap_cdf": False, "train.schedule": "cosine", "train.milestones": [], "train.gamma": 0.1,
               "train.compile": False, "train.check_every": 1,
               "model.weight_bits": 32, "model.act_bits": 32, "model.act_basis": "shared",
               "model.zero_init_residual": False, "data.crop_scale": [0.08, 1.0],
               "data.synthetic.ambiguous_fraction": 0.0, "data.synthetic.ambiguous_texture_fraction": 0.0,
               "data.synthetic.pixel_noise": 0.05, "data.synthetic.stripe_period": [0.9, 1.1],
               "model.init": None}
NOT_TRAINING = ("eval",)  # how a trained model is evaluated: not part of what was trained


def _parent_of(tree: dict, key: str) -> tuple[dict, str]:
    """The mapping holding a dotted key's leaf (an empty one where a section is absent), and the leaf."""
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.get(part, {})
    return tree, leaf


def hashed_part(tree: Mapping) -> dict:
    """The part of a nested config dict that the hash covers. Leaf values may be of any type (e.g.
    MLflow param strings); only method.name, model.backbone and data.dataset are read."""
    d = copy_tree(tree)
    for key in NOT_HASHED:
        node, leaf = _parent_of(d, key)
        node.pop(leaf, None)
    for key, neutral in ADDED_LATER.items():
        node, leaf = _parent_of(d, key)
        if leaf in node and node[leaf] in (neutral, param_value(neutral)):
            del node[leaf]
    data, model, method = d.get("data", {}), d.get("model", {}), d.get("method", {})
    if data.get("dataset") == "synthetic":
        data.pop("root", None)
    entry = METHODS.get(method.get("name"))
    if entry is not None:
        d["method"] = {k: v for k, v in method.items() if k == "name" or k in entry.options.model_fields}
    backbone = backbone_entry(model.get("backbone"))
    if backbone is not None:
        d["model"] = {k: v for k, v in model.items() if k in ALWAYS_READ or k in backbone.reads}
    if d.get("model", {}).get("init") is not None:
        d["model"]["init"] = init_digest(str(d["model"]["init"]))
    if "method" in d:
        _san_stem(d["method"], model.get("backbone"))
    return d


def init_digest(path: str) -> str:
    """"sha256:<hex>" of a model.init file (read once per file version in a process)."""
    if path.startswith("sha256:"):
        return path
    full = os.path.abspath(os.path.expanduser(path))
    try:
        stat = os.stat(full)
    except OSError:
        raise ConfigError(f"model.init={path}: no such file; its sha256 is part of the config hash") from None
    return "sha256:" + _file_sha256(full, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_BOOLEAN = {True: True, "true": True, False: False, "false": False, None: None, "null": None}


def _san_stem(method: dict, backbone) -> None:
    """``method.meta_stem`` in the hash by what it builds, not by how it is written.

    SAN jobs hashed before the switch existed generated every conv, the stem included. A meta stem
    therefore leaves the key out (those jobs keep their hashes and finished runs, and an old run's
    params, which lack the key, read as a meta stem); a plain stem enters as ``meta_stem: false``,
    whether written so or left to the reference's choice (None), so the two spellings are one job.
    This is ADDED_LATER's rule with a neutral value that depends on the backbone, which is why the
    new default (None: a plain stem on ResNets) changes those SAN jobs' hashes and not MobileNetV2's.
    With privatized convs the switch is inert and never hashed."""
    if method.get("name") != "san":
        return
    written = method.pop("meta_stem", True)
    if method.get("convs", "meta") != "meta":
        return
    setting = _BOOLEAN.get(written, written)
    if not san_meta_stem(setting, str(backbone)):
        method["meta_stem"] = False


def config_hash(cfg) -> str:
    """12 hex chars identifying what a job computes; stable across processes and machines."""
    return _digest(hashed_part(cfg.to_dict()))


def _digest(tree: dict) -> str:
    canonical = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def training_part(tree: Mapping) -> dict:
    """The hashed part of a nested config dict without its evaluation settings."""
    d = hashed_part(tree)
    for key in NOT_TRAINING:
        d.pop(key, None)
    return d


def training_hash(cfg) -> str:
    """12 hex chars identifying the trained model: the config hash's part minus ``eval.*``. Takes a
    JobConfig or a nested config dict (e.g. a checkpoint's ``config``)."""
    return training_hash_of_params({k: param_value(v) for k, v in flatten(cfg).items()})


def training_hash_of_params(params: Mapping[str, str]) -> str:
    """The training hash of a job run recorded before runs were tagged with it: from its MLflow params
    (the flattened config, values rendered by ``param_value``)."""
    return _digest(training_part(nest(params)))
