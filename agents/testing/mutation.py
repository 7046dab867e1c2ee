"""Mutants of one function: small changes to its code that a useful test must notice.

Operators: return None instead of the value, flip a comparison, swap an arithmetic operator,
swap and/or, negate an if condition, shift a numeric constant by one. Each mutant is the whole
module's source with exactly one change inside the target function.
"""
from __future__ import annotations

import ast
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
}
# Preferred order: the operators that most often reveal a test that asserts nothing come first.
KIND_ORDER = ("return", "compare", "binop", "if", "boolop", "constant")


@dataclass(frozen=True)
class Mutant:
    """One changed version of a module."""

    kind: str
    line: int
    description: str
    source: str


def mutants(source: str, qualname: str, *, limit: int = 4) -> list[Mutant]:
    """Up to ``limit`` mutants of function ``qualname`` (e.g. ``apply`` or ``Cart.total``), varied by kind."""
    tree = ast.parse(source)
    target = find_function(tree, qualname)
    if target is None:
        return []
    points = list(_points(target))
    points.sort(key=lambda p: (KIND_ORDER.index(p[0]), p[1]))
    chosen: list[tuple[str, int, str, int]] = []
    for kind in KIND_ORDER:  # one of each kind first, then the rest in order
        chosen += [p for p in points if p[0] == kind][:1]
    chosen += [p for p in points if p not in chosen]
    out = []
    for kind, line, description, index in chosen[:limit]:
        mutated = copy.deepcopy(tree)
        func = find_function(mutated, qualname)
        assert func is not None
        _apply(func, index)
        out.append(Mutant(kind, line, description, ast.unparse(mutated) + "\n"))
    return out


def find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The function or method ``qualname`` (``Class.method``) at module level."""
    scope: list[ast.stmt] = tree.body
    *classes, name = qualname.split(".")
    for cls in classes:
        found = next((n for n in scope if isinstance(n, ast.ClassDef) and n.name == cls), None)
        if found is None:
            return None
        scope = found.body
    return next((n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                 and n.name == name), None)


def _nodes(func: ast.AST) -> Iterator[ast.AST]:
    """Nodes of the function (its body and defaults) in a stable order."""
    yield from ast.walk(func)


def _points(func: ast.AST) -> Iterator[tuple[str, int, str, int]]:
    for index, node in enumerate(_nodes(func)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Return) and node.value is not None and not _is_none(node.value):
            yield "return", line, f"line {line}: return None instead of the value", index
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in COMPARE_SWAP:
            new = COMPARE_SWAP[type(node.ops[0])].__name__
            yield "compare", line, f"line {line}: {type(node.ops[0]).__name__} -> {new}", index
        elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAP:
            new = BINOP_SWAP[type(node.op)].__name__
            yield "binop", line, f"line {line}: {type(node.op).__name__} -> {new}", index
        elif isinstance(node, ast.If):
            yield "if", line, f"line {line}: negated if condition", index
        elif isinstance(node, ast.BoolOp):
            yield "boolop", line, f"line {line}: and/or swapped", index
        elif (isinstance(node, ast.Constant) and type(node.value) in (int, float)
              and not isinstance(node.value, bool)):
            value: Any = node.value
            yield "constant", line, f"line {line}: {value!r} -> {value + 1!r}", index


def _apply(func: ast.AST, index: int) -> None:
    node = list(_nodes(func))[index]
    change: dict[type, Callable[[Any], None]] = {
        ast.Return: lambda n: setattr(n, "value", ast.Constant(None)),
        ast.Compare: lambda n: n.ops.__setitem__(0, COMPARE_SWAP[type(n.ops[0])]()),
        ast.BinOp: lambda n: setattr(n, "op", BINOP_SWAP[type(n.op)]()),
        ast.If: lambda n: setattr(n, "test", ast.UnaryOp(ast.Not(), n.test)),
        ast.BoolOp: lambda n: setattr(n, "op", ast.Or() if isinstance(n.op, ast.And) else ast.And()),
        ast.Constant: lambda n: setattr(n, "value", n.value + 1),
    }
    change[type(node)](node)
    ast.fix_missing_locations(func)


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None
