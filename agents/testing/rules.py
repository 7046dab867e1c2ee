"""The deterministic test generator: characterization tests for module-level functions.

Inputs are chosen from each parameter's annotation, default or name; the function is called in
the service's isolated virtualenv (each call under an alarm) to observe what it returns or
raises, twice, and only outcomes that repeat and can be written as Python literals become
assertions. The test so pins the current behaviour; the prover then checks it catches mutants.
"""
from __future__ import annotations

import ast
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from agents.testing.venvs import run_python
from orchestra.settings import Settings

PROBE_TIMEOUT_S = 60
MAX_CASES = 12
MAX_ASSERTS = 5

NUMBERS: list[object] = [0, 1, 7, -3, 100, 2.5]
STRINGS: list[object] = ["", "abc", "Hello World", "a-b_c 42"]
LISTS: list[object] = [[], [1, 2, 3], [5, -1, 0, 5]]
BY_ANNOTATION: dict[str, list[object]] = {
    "int": [0, 1, 7, -3, 100], "float": [0.0, 2.5, -1.5, 100.0, 150.0], "str": STRINGS,
    "bool": [True, False], "list": LISTS, "dict": [{}, {"a": 1, "b": 2}], "tuple": [(), (1, 2)],
    "set": [set(), {1, 2}], "bytes": [b"", b"abc"],
}
NAME_HINTS: list[tuple[re.Pattern[str], list[object]]] = [
    (re.compile(r"^(is_|has_|flag|enabled|strict|force)"), [True, False]),
    (re.compile(r"(items|values|numbers|list|lst|xs|rows|data|prices|scores|nums)$"), LISTS),
    (re.compile(r"(name|text|s|word|string|title|email|path|url|key|code|sku|message|line|prefix|"
                r"suffix|char|sep|label|slug|query)$"), STRINGS),
    (re.compile(r"(price|amount|total|rate|percent|ratio|qty|quantity|^n$|count|size|number|^x$|^y$|"
                r"^a$|^b$|^i$|^k$|age|year|month|day|days|hours|minutes|seconds|limit|width|height|"
                r"weight|score|value|discount|tax|level|index|start|end|step|base|exp)"), NUMBERS),
]
FALLBACK: list[object] = [0, 1, "abc", None, [1, 2]]

PROBE = r"""
import ast, importlib, json, signal, sys
mod = importlib.import_module(sys.argv[1])
owner, _, name = sys.argv[2].rpartition(".")
ctor = None
if owner:  # a method: call it on a fresh instance built with the first constructor args that work
    cls = getattr(mod, owner)
    for src in json.loads(sys.argv[4]):
        try:
            cls(*ast.literal_eval(src))
        except Exception:
            continue
        ctor = src
        break
    if ctor is None:
        print("PROBE:" + json.dumps({"ctor": None, "out": []}))
        sys.exit(0)
    fn = lambda *args: getattr(cls(*ast.literal_eval(ctor)), name)(*args)
else:
    fn = getattr(mod, name)
def alarm(*_):
    raise TimeoutError("probe case took too long")
signal.signal(signal.SIGALRM, alarm)
out = []
for src in json.loads(sys.argv[3]):
    signal.alarm(2)
    try:
        value = fn(*ast.literal_eval(src))
        text = repr(value)
        ok = ast.literal_eval(text) == value and type(ast.literal_eval(text)) is type(value)
        out.append(["ok", text] if ok else ["opaque", type(value).__name__])
    except TimeoutError:
        out.append(["timeout", ""])
    except Exception as exc:
        where = type(exc).__module__
        out.append(["raise", type(exc).__qualname__, where])
    finally:
        signal.alarm(0)
print("PROBE:" + json.dumps({"ctor": ctor, "out": out}))
"""


def candidate_inputs(func: ast.FunctionDef | ast.AsyncFunctionDef, *, method: bool = False) -> list[tuple]:
    """Argument tuples to try for the required positional parameters of ``func``."""
    params = list(func.args.posonlyargs) + list(func.args.args)
    required = params[: len(params) - len(func.args.defaults)]
    if method and required:
        required = required[1:]
    pools = [_values_for(p) for p in required]
    combos = list(itertools.islice(itertools.product(*pools), 400))
    step = max(1, len(combos) // MAX_CASES)
    picked = combos[::step][:MAX_CASES]
    diagonal = [tuple(pool[k % len(pool)] for pool in pools) for k in range(max(map(len, pools), default=1))]
    unique = {repr(c): c for c in picked + diagonal}
    return list(unique.values())[: MAX_CASES + 4] if pools else [()]


@dataclass(frozen=True)
class Observed:
    """What calling a function did, per input; ``ctor`` holds the constructor args for a method."""

    outcomes: list[tuple[tuple, list[str]]]
    ctor: str | None = None


def observe(python: Path, root: Path, module: str, function: str, cases: list[tuple], *,
            settings: Settings, ctors: list[tuple] | None = None) -> Observed:
    """Call ``module.function`` (or ``Class.method``) with each case twice; keep outcomes that repeat."""
    sources = json.dumps([repr(c) for c in cases])
    ctor_sources = json.dumps([repr(c) for c in ctors or []])
    runs = []
    for _ in range(2):
        proc = run_python(python, ["-c", PROBE, module, function, sources, ctor_sources], cwd=root,
                          settings=settings, timeout=PROBE_TIMEOUT_S,
                          extra_env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"})
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE:")), None)
        if proc.returncode != 0 or line is None:
            return Observed([])
        runs.append(json.loads(line.removeprefix("PROBE:")))
    if runs[0]["ctor"] != runs[1]["ctor"] or len(runs[0]["out"]) != len(cases):
        return Observed([])
    kept = [(case, a) for case, a, b in zip(cases, runs[0]["out"], runs[1]["out"], strict=True)
            if a == b and a[0] in ("ok", "raise")]
    return Observed(kept, runs[0]["ctor"])


def write_test(module: str, function: str, observed: Observed) -> str | None:
    """A pytest module asserting the observed outcomes, or None when nothing is assertable."""
    chosen = _diverse(observed.outcomes, module)
    if not chosen:
        return None
    owner, _, name = function.rpartition(".")
    imported = owner or name
    if owner:  # a method of a fresh instance
        ctor_args = ", ".join(repr(a) for a in ast.literal_eval(observed.ctor or "()"))
        call = f"{owner}({ctor_args}).{name}"
    else:
        call = name
    lines = ["import pytest", "", f"from {module} import {imported}", ""]
    imports_extra: set[str] = set()
    body = []
    for case, outcome in chosen:
        args = ", ".join(repr(a) for a in case)
        if outcome[0] == "ok":
            compare = "is" if outcome[1] in ("None", "True", "False") else "=="
            body.append(f"    assert {call}({args}) {compare} {outcome[1]}")
        else:
            exc = outcome[1]
            if outcome[2] == module:
                imports_extra.add(f"from {module} import {exc}")
            body += [f"    with pytest.raises({exc}):", f"        {call}({args})"]
    test_name = re.sub(r"\W", "_", function.replace(".", "_")).lower()
    return "\n".join([*lines[:3], *sorted(imports_extra), "", "",
                      f"def test_{test_name}_keeps_its_behaviour():",
                      f'    """Characterization test: pins what {function} returns today."""', *body, ""])


def _diverse(outcomes: list[tuple[tuple, list[str]]], module: str) -> list[tuple[tuple, list[str]]]:
    """Up to MAX_ASSERTS cases with distinct outcomes: returns first, and up to two raises."""
    usable = [(c, o) for c, o in outcomes if o[0] == "ok" or o[2] in ("builtins", module)]
    distinct: dict[str, tuple[tuple, list[str]]] = {}
    for case, outcome in usable:
        distinct.setdefault(json.dumps(outcome), (case, outcome))
    returns = [co for co in distinct.values() if co[1][0] == "ok"]
    raises = [co for co in distinct.values() if co[1][0] == "raise"][:2]
    return returns[: MAX_ASSERTS - len(raises)] + raises


def _values_for(arg: ast.arg) -> list[object]:
    annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
    base = re.split(r"[\[|\s]", annotation.replace("typing.", "").replace("Optional[", ""))[0].lower()
    if base in BY_ANNOTATION:
        return BY_ANNOTATION[base]
    if base in ("sequence", "iterable"):
        return LISTS
    name = arg.arg.lower()
    for pattern, values in NAME_HINTS:
        if pattern.search(name):
            return values
    return FALLBACK
