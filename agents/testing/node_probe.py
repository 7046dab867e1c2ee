"""Characterization tests for Node: inputs from a function's parameters and body, results observed by a probe.

Inputs come from each parameter's TypeScript type, default value or name, and from the literals the
body compares against (and their neighbours). The probe is itself a test file in the service's
runner (so TypeScript, ESM and CommonJS load as the service's own tests load them); it calls each
function twice per input, inside the sandbox, and records outcomes that repeat and are plain data.
The test written from them asserts those outcomes in the same runner.
"""
from __future__ import annotations

import json
import re
from typing import Any

from agents.testing.jsfuncs import JsFunction, split_params
from agents.testing.rules import FALLBACK, LISTS, NAME_HINTS, NUMBERS, STRINGS

MAX_CASES = 12
MAX_ASSERTS = 5
CALL_TIMEOUT_MS = 2000
BY_TYPE: dict[str, list[Any]] = {"number": NUMBERS, "string": STRINGS, "boolean": [True, False], "array": LISTS,
                                 "object": [{}, {"a": 1}]}
COMPARED = re.compile(r"""(?:[<>]=?|[!=]==?)\s*(-?\d+(?:\.\d+)?|"[^"\n]*"|'[^'\n]*')"""
                      r"""|(-?\d+(?:\.\d+)?|"[^"\n]*"|'[^'\n]*')\s*(?:[<>]=?|[!=]==?)""")

PROBE = """const OUT = __OUT__;
const CASES = __CASES__;
const plain = (v, depth = 0) => v === null || ["string", "boolean"].includes(typeof v)
  || (typeof v === "number" && Number.isFinite(v) && !Object.is(v, -0))
  || (depth < 5 && Array.isArray(v) && v.every((x) => plain(x, depth + 1)))
  || (depth < 5 && typeof v === "object" && [Object.prototype, null].includes(Object.getPrototypeOf(v))
      && Object.values(v).every((x) => plain(x, depth + 1)));
const slow = () => new Promise((resolve) => setTimeout(() => resolve({ slow: true }), __CALL_MS__));
async function outcome(fn, args) {
  let thenable = false;
  try {
    const result = fn(...structuredClone(args));
    thenable = result !== null && typeof result === "object" && typeof result.then === "function";
    const value = thenable ? await Promise.race([result, slow()]) : result;
    if (value === undefined) return { undefined: true, async: thenable };
    return plain(value) && JSON.stringify(value).length < 2000 ? { value, async: thenable } : null;
  } catch (error) {
    return { error: String((error && error.message) || error).slice(0, 200), async: thenable };
  }
}
it("observes", async () => {
  const api = { ...(mod.default && typeof mod.default === "object" ? mod.default : {}), ...mod };
  const seen = {};
  for (const [name, cases] of Object.entries(CASES)) {
    seen[name] = [];
    for (const args of cases) {
      if (typeof api[name] !== "function") break;
      const first = await outcome(api[name], args);
      const second = await outcome(api[name], args);
      if (first && JSON.stringify(first) === JSON.stringify(second)) seen[name].push({ args, ...first });
    }
  }
  writeFileSync(OUT, JSON.stringify(seen));
}, 60000);
"""


def candidate_inputs(function: JsFunction, body: str) -> list[list[Any]]:
    """Argument lists to call ``function`` with: each parameter's first value, then each one varied."""
    numbers, strings = _compared(body)
    pools = []
    for param in split_params(function.params):
        if param.startswith("..."):
            break
        pools.append(_values(param, numbers, strings))
    if not pools:
        return [[]]
    base = [pool[0] for pool in pools]
    cases, seen = [base], {json.dumps(base)}
    for index, pool in enumerate(pools):
        for value in pool[1:]:
            case = [*base[:index], value, *base[index + 1:]]
            if json.dumps(case) not in seen:
                seen.add(json.dumps(case))
                cases.append(case)
    return cases[:MAX_CASES]


def probe_file(spec: str, cases: dict[str, list[list[Any]]], out: str, *, runner: str, esm: bool) -> str:
    """A test file that records what each function returns or throws for its cases into ``out``."""
    if esm:
        runner_import = 'import { it } from "vitest";\n' if runner == "vitest" else ""
        head = f'import {{ writeFileSync }} from "node:fs";\n{runner_import}import * as mod from {json.dumps(spec)};\n'
    else:
        head = f'const {{ writeFileSync }} = require("node:fs");\nconst mod = require({json.dumps(spec)});\n'
    return head + PROBE.replace("__OUT__", json.dumps(out)).replace("__CASES__", json.dumps(cases)).replace(
        "__CALL_MS__", str(CALL_TIMEOUT_MS))


def characterization_test(function: JsFunction, spec: str, observed: list[dict[str, Any]], *, runner: str,
                          esm: bool) -> str | None:
    """A test asserting the observed outcomes (the most varied ones first); None when nothing was observed."""
    chosen = _varied(observed)
    if not chosen:
        return None
    name = function.name
    lines = [_assertion(name, o) for o in chosen]
    if esm:
        head = ('import { describe, expect, it } from "vitest";\n' if runner == "vitest" else "") + \
            f"import {{ {name} }} from {json.dumps(spec)};\n"
    else:
        head = f"const {{ {name} }} = require({json.dumps(spec)});\n"
    return (head + f"\n// Pins what {name} does today (generated; proven to catch a changed version of it).\n"
            f"describe({json.dumps(name)}, () => {{\n  it(\"keeps its current results\", async () => {{\n"
            + "".join(f"    {line}\n" for line in lines) + "  });\n});\n")


def _assertion(name: str, outcome: dict[str, Any]) -> str:
    call = f"{name}({', '.join(json.dumps(a) for a in outcome['args'])})"
    if "error" in outcome:
        message = json.dumps(outcome["error"]) if outcome["error"] else ""
        return (f"await expect({call}).rejects.toThrow({message});" if outcome.get("async")
                else f"expect(() => {call}).toThrow({message});")
    got = f"await {call}" if outcome.get("async") else call
    if outcome.get("undefined"):
        return f"expect({got}).toBeUndefined();"
    return f"expect({got}).toEqual({json.dumps(outcome['value'])});"


def _varied(observed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to MAX_ASSERTS outcomes: each parameter varied once first, then different results, then the rest."""
    if not observed:
        return []
    base = observed[0]["args"]

    def varied(o: dict[str, Any]) -> tuple[int, ...]:
        return tuple(i for i, (a, b) in enumerate(zip(o["args"], base, strict=False)) if json.dumps(a) != json.dumps(b))

    def result(o: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in o.items() if k != "args"}, sort_keys=True)

    chosen: list[dict[str, Any]] = []
    for key in (varied, result, None):
        for o in observed:
            if len(chosen) < MAX_ASSERTS and o not in chosen and (key is None or key(o) not in map(key, chosen)):
                chosen.append(o)
    return chosen


def _values(param: str, numbers: list[Any], strings: list[Any]) -> list[Any]:
    if param[0] in "{[":  # destructured: an empty object or array lets its defaults apply
        return [{} if param[0] == "{" else []]
    name, _, default = param.partition("=")
    name, _, kind = name.partition(":")
    name, kind, default = name.strip().rstrip("?"), kind.strip(), default.strip()
    values: list[Any] = []
    if default:
        try:
            values.append(json.loads(default.replace("'", '"')))
        except json.JSONDecodeError:
            pass
    typed = "array" if kind.endswith("[]") or kind.startswith("Array<") else kind
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    hinted = BY_TYPE.get(typed) or next((v for p, v in NAME_HINTS if p.search(snake)), None)
    if hinted is None and values:
        hinted = BY_TYPE.get({bool: "boolean", int: "number", float: "number", str: "string",
                              list: "array", dict: "object"}.get(type(values[0]), ""))
    pool = list(hinted or FALLBACK)
    if hinted is None or hinted is NUMBERS:
        pool = numbers + pool
    if hinted is None or hinted is STRINGS:
        pool = strings + pool
    out: list[Any] = []
    for value in values + pool:
        if isinstance(value, (tuple, set, bytes)) or json.dumps(value) in map(json.dumps, out):
            continue
        out.append(value)
    return out[:7]


def _compared(body: str) -> tuple[list[Any], list[Any]]:
    """Numbers (with their neighbours) and strings the body compares against."""
    numbers: list[Any] = []
    strings: list[Any] = []
    for match in COMPARED.finditer(body):
        literal = match.group(1) or match.group(2)
        if literal[0] in "\"'":
            strings.append(literal[1:-1])
        else:
            value = float(literal) if "." in literal else int(literal)
            numbers += [value, value + 1, value - 1]
    return numbers[:6], strings[:4]
