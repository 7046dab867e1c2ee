"""HCL values from Python values, for the files the generator writes.

Everything taken from devops_orchestra.yaml reaches a ``.tf`` file through :func:`value` only: strings are
written as quoted HCL strings with every quote, backslash and control character escaped and template
sequences (``${``, ``%{``) doubled, so a value reads back as exactly itself and never as HCL. Objects are
laid out the way ``terraform fmt`` lays them out (one attribute per line, ``=`` aligned).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

INDENT = "  "
Value = str | int | bool | None | Sequence["Value"] | Mapping[str, "Value"]


def string(text: str) -> str:
    """``text`` as a quoted HCL string literal that evaluates to ``text`` itself."""
    quoted = json.dumps(text, ensure_ascii=False)  # escapes ", \\ and control characters as HCL does
    return quoted.replace("${", "$${").replace("%{", "%%{")


def value(data: Value, depth: int = 0) -> str:
    """An HCL expression for ``data`` (nested at ``depth`` levels of indentation)."""
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, int):
        return str(data)
    if isinstance(data, str):
        return string(data)
    if isinstance(data, Mapping):
        return _object(data, depth)
    return "[" + ", ".join(value(item, depth) for item in data) + "]"


def _object(data: Mapping[str, Value], depth: int) -> str:
    if not data:
        return "{}"
    pairs = [(string(key), value(item, depth + 1)) for key, item in data.items()]
    return "{\n" + attributes(pairs, INDENT * (depth + 1)) + "\n" + INDENT * depth + "}"


def attributes(pairs: list[tuple[str, str]], indent: str) -> str:
    """``key = value`` lines as ``terraform fmt`` writes them: the ``=`` of consecutive one-line attributes
    aligned; an attribute whose value spans lines stands alone."""
    lines: list[str] = []
    group: list[tuple[str, str]] = []
    for key, text in pairs:
        if "\n" in text:
            lines += _aligned(group, indent) + [f"{indent}{key} = {text}"]
            group = []
        else:
            group.append((key, text))
    return "\n".join(lines + _aligned(group, indent))


def _aligned(group: list[tuple[str, str]], indent: str) -> list[str]:
    width = max((len(key) for key, _ in group), default=0)
    return [f"{indent}{key.ljust(width)} = {text}" for key, text in group]


def variable(name: str, type_: str, default: Value, description: str) -> str:
    """A ``variable`` block; ``name`` and ``type_`` are the generator's own, ``default`` is data."""
    pairs = [("description", string(description)), ("type", type_), ("default", value(default, 1))]
    return f'variable "{name}" {{\n{attributes(pairs, INDENT)}\n}}\n'
