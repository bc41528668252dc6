"""Config errors: one message that names the key, the bad value, the valid choices or the closest key."""
from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the fix."""


def show(value) -> str:
    """A value as the user wrote it in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def unknown_key_message(key: str, valid: Sequence[str], what: str = "key") -> str:
    # A key cut short ("scheduler.grace") means the key it begins; otherwise the closest spelling.
    close = [v for v in valid if v.startswith(key)][:1] or difflib.get_close_matches(key, valid, n=1)
    if close:
        return f"unknown {what} '{key}' — did you mean '{close[0]}'?"
    return f"unknown {what} '{key}'; valid: {', '.join(valid)}"


def type_name(tp) -> str:
    """A field type in words: 'int', 'a list of int', 'float or null', 'bool (true/false)'."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return type_name(typing.get_args(tp)[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    args = typing.get_args(tp)
    if type(None) in args:
        return " or ".join(type_name(a) for a in args if a is not type(None)) + " or null"
    if origin is list:
        return f"a list of {type_name(args[0])}"
    return {bool: "bool (true/false)"}.get(tp, getattr(tp, "__name__", str(tp)))


def _field(model: type[BaseModel], path: Sequence[str]):
    """The annotation of the field at a dotted path (None if there is none)."""
    annotation = None
    for name in path:
        field = model.model_fields.get(name) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        annotation = model = field.annotation
    return annotation


def _value_at(tree, path: Sequence[str]):
    for name in path:
        tree = tree[name]
    return tree


def message_from(error: ValidationError, model: type[BaseModel], tree: Mapping, valid_keys: Sequence[str]) -> str:
    """The first problem pydantic found, said as resolab says it."""
    problem = error.errors()[0]
    path = [str(part) for part in problem["loc"] if isinstance(part, str)]
    key = ".".join(path)
    kind = problem["type"]
    if kind == "extra_forbidden":
        return unknown_key_message(key, valid_keys)
    value = _value_at(tree, path)
    annotation = _field(model, path)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"{key}: expected a mapping of {key} settings, got {show(value)}"
    if kind == "literal_error":
        choices = ", ".join(map(str, typing.get_args(annotation)))
        return f"{key}: expected one of {choices}, got {show(value)}"
    bound = problem.get("ctx") or {}
    for name, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if name in bound:
            return f"{key} must be {word} {bound[name]}, got {show(value)}"
    got = "null" if value is None else f"{show(value)} ({type(value).__name__})"
    return f"{key}: expected {type_name(annotation)}, got {got}"
