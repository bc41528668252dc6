"""Reading suite files: strict YAML (a key given twice is an error), the top-level keys, and ``extends``.

Layering, later wins: the ``extends`` bases in order, then the file itself. ``job`` deep-merges
(lists replace), ``grid`` and ``smoke`` merge key-wise, ``cases`` of a child replace the parent's
(``cases:`` left empty removes them), ``search``, ``name`` and ``description`` replace.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from .errors import ConfigError, show, unknown_key_message
from .tree import deep_merge, nest

TOP_LEVEL_KEYS = ("name", "description", "extends", "job", "grid", "cases", "search", "smoke")


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


def read_suite_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read suite file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not a text file (byte {e.start} is not UTF-8); a suite is a YAML file "
                          "such as experiments/quickstart.yaml") from None
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
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(TOP_LEVEL_KEYS)}, got {show(data)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{path}: {unknown_key_message(str(key), TOP_LEVEL_KEYS, 'top-level key')}")
    _check_sections(path, data)
    return data


def _check_sections(path: Path, data: Mapping) -> None:
    expected = {"name": str, "description": str, "job": Mapping, "grid": Mapping, "smoke": Mapping,
                "cases": (list, Mapping), "extends": (str, list), "search": Mapping}
    for key, kind in expected.items():
        value = data.get(key)
        if value is not None and not isinstance(value, kind):
            names = {str: "a string", Mapping: "a mapping", (list, Mapping): "a list or a mapping",
                     (str, list): "a path or a list of paths"}
            raise ConfigError(f"{path}: '{key}' must be {names[kind]}, got {show(value)}")


def read_header(path: Path) -> str:
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


def load_layers(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file merged over its `extends` bases (recursively, in order)."""
    if path in chain:
        raise ConfigError("extends cycle: " + " -> ".join(str(p) for p in (*chain, path)))
    data = read_suite_file(path)
    entries = data.get("extends") or []
    merged: dict = {}
    for entry in [entries] if isinstance(entries, str) else entries:
        if not isinstance(entry, str):
            raise ConfigError(f"{path}: extends entries must be paths, got {show(entry)}")
        base = (path.parent / entry).resolve()
        if not base.is_file():
            raise ConfigError(f"{path}: extends '{entry}', but {base} does not exist")
        merged = _merge_layer(merged, load_layers(base, (*chain, path)))
    return _merge_layer(merged, data)


def _merge_layer(base: Mapping, child: Mapping) -> dict:
    out = {k: v for k, v in base.items() if k != "extends"}
    for key, value in child.items():
        if key == "job":
            out["job"] = deep_merge(out.get("job", {}), nest(value or {}))
        elif key in ("grid", "smoke"):
            out[key] = {**out.get(key, {}), **(value or {})}
        elif key != "extends":
            out[key] = value
    return out
