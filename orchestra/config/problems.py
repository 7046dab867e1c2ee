"""Turn pydantic errors and YAML nodes into `FILE:LINE: field.path: what is wrong` lines."""
from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from orchestra.config.environments import ENV_ALIASES
from orchestra.config.graph import CROSS_CHECK, problems_of
from orchestra.config.types import did_you_mean
from orchestra.intents import ENVIRONMENTS

Loc = tuple[str | int, ...]
_SIMPLE = {
    "int_parsing": "must be a whole number (got `{value}`)",
    "int_type": "must be a whole number (got `{value}`)",
    "int_from_float": "must be a whole number (got `{value}`)",
    "float_parsing": "must be a number (got `{value}`)",
    "float_type": "must be a number (got `{value}`)",
    "bool_parsing": "must be true or false (got `{value}`)",
    "bool_type": "must be true or false (got `{value}`)",
    "string_type": "must be text (got `{value}`)",
    "greater_than_equal": "must be at least {ge} (got `{value}`)",
    "less_than_equal": "must be at most {le} (got `{value}`)",
    "datetime_from_date_parsing": "must be a date and time such as 2026-12-24T18:00:00Z (got `{value}`)",
    "datetime_parsing": "must be a date and time such as 2026-12-24T18:00:00Z (got `{value}`)",
    "datetime_type": "must be a date and time such as 2026-12-24T18:00:00Z (got `{value}`)",
    "time_parsing": "must be a time of day such as 16:00 (got `{value}`)",
    "time_type": "must be a time of day such as 16:00 (got `{value}`)",
}


def field_path(loc: Loc) -> str:
    """``('deployment', 'services', 0, 'port')`` -> ``deployment.services[0].port``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def line_of(root: yaml.Node | None, loc: Loc) -> int:
    """The 1-based line of the deepest node of ``loc`` present in the YAML (its key's line for mappings)."""
    node, line = root, (root.start_mark.line + 1 if root is not None else 1)
    for part in loc:
        found = _child(node, part)
        if found is None:
            break
        node, line = found
    return line


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node, int] | None:
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item, item.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        names = {str(part)} | {alias for alias, name in ENV_ALIASES.items() if name == part}
        for key, value in reversed(node.value):  # the last duplicate wins, as in the loaded data
            if str(key.value).lower() in names or str(key.value) in names:
                return value, key.start_mark.line + 1
    return None


def duplicate_keys(node: yaml.Node | None, loc: Loc = ()) -> list[tuple[Loc, int, str]]:
    """Keys given twice in one mapping (YAML keeps the last one silently)."""
    found: list[tuple[Loc, int, str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in first:
                found.append((loc + (name,), line, f"duplicate key `{name}` (first given on line {first[name]})"))
            first.setdefault(name, line)
            found += duplicate_keys(value, loc + (name,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += duplicate_keys(item, loc + (i,))
    return found


def expand(errors: Sequence[dict[str, Any]]) -> list[tuple[Loc, str]]:
    """(location, message) pairs, one per problem, cross-field problems split into their own locations."""
    result: list[tuple[Loc, str]] = []
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == CROSS_CHECK:
            result += [(loc + ("services",) + tuple(sub), msg) for sub, msg in problems_of(error)]
        else:
            result.append((loc, message(error)))
    return result


def message(error: dict[str, Any]) -> str:
    """What is wrong, in words a user can act on."""
    kind, loc, value = error["type"], tuple(error["loc"]), error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden" and loc[:-1] == ("environments",):
        return (f"unknown environment{_env_suggestion(str(loc[-1]))}; environments are "
                f"{', '.join(ENVIRONMENTS)} (or prod, stg, dev)")
    if kind == "extra_forbidden":
        return f"unknown key{did_you_mean(str(loc[-1]), allowed_keys(loc[:-1]))}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        return (f"`{value}` is not allowed; use one of {', '.join(choices)}"
                f"{did_you_mean(str(value), choices)}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of keys (got `{value}`)"
    if kind == "list_type":
        return f"must be a list (got `{value}`)"
    if kind == "too_short":
        return "must not be empty"
    simple = _SIMPLE.get(kind)
    if simple is not None:
        return simple.format(value=value, **(error.get("ctx") or {}))
    text = re.sub(r"^(Value|Assertion) error, ", "", error["msg"])
    if kind.endswith(("_type", "_parsing")):
        return f"{text[:1].lower()}{text[1:]} (got `{value}`)"
    return text


def _env_suggestion(word: str) -> str:
    names = {**{e: e for e in ENVIRONMENTS}, **ENV_ALIASES}
    close = difflib.get_close_matches(word.lower(), list(names), n=1, cutoff=0.6)
    return f" (did you mean `{names[close[0]]}`?)" if close else ""


def allowed_keys(loc: Loc, model: type[BaseModel] | None = None) -> list[str]:
    """The keys the model accepts at ``loc`` (for "did you mean" suggestions)."""
    from orchestra.config.model import ProjectConfig

    current: Any = model or ProjectConfig
    skip = 0
    for part in loc:
        if skip:
            skip -= 1
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = _field_named(current, str(part))
        if field is None:
            return []
        current, skip = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _field_named(model: type[BaseModel], name: str) -> Any:
    for field_name, field in model.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None) or []
        if name in (field_name, field.alias, *choices):
            return field
    return None


def _inner_model(annotation: Any) -> tuple[Any, int]:
    """The model inside ``X``, ``list[X]``, ``X | None``; and how many container levels wrap it."""
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        inner, depth = _inner_model(typing.get_args(annotation)[-1])
        return inner, depth + 1
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner, depth = _inner_model(arg)
            if inner is not None:
                return inner, depth
        return None, 0
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, 0
    return None, 0
