"""The exported functions of a JavaScript or TypeScript module, and mutants of one of them.

No JavaScript parser runs on the worker: the module's text is read with its strings and comments
blanked out (so a brace or ``export`` inside them means nothing), declarations are found by
pattern, and bodies by matching braces. What this misses is simply not a target. Mutants are
textual: one operator or constant changed in the function's body; one that no longer parses is
discarded by the prover (its test file then fails to load, which is not a kill).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SOURCE_EXTENSIONS = (".js", ".mjs", ".cjs", ".ts", ".mts", ".cts")
SKIP_PARTS = frozenset({"node_modules", "dist", "build", "coverage", ".next", "out", "tests", "test", "__tests__",
                        "__mocks__", ".git"})
PLAIN_PATH = re.compile(r"[\w./@+-]{1,200}")  # a module path that cannot carry a sentence into a prompt
SKIP_NAME = re.compile(r"\.(test|spec|config|d)\.[cm]?[jt]s$|^orchestra[_.]|\.orchestra-mutant-")
NAME = r"[A-Za-z_$][\w$]*"
DECLARATION = re.compile(rf"^[ \t]*(?P<export>export\s+)?(?:async\s+)?function\s*\*?\s*(?P<name>{NAME})\s*"
                         rf"(?:<[^>(]*>)?\s*\(", re.M)
ASSIGNED = re.compile(rf"^[ \t]*(?:(?P<export>export\s+)?(?:const|let|var)\s+(?P<name>{NAME})(?:\s*:[^=\n]+)?"
                      rf"|(?:module\.)?exports\.(?P<cjs>{NAME}))\s*=\s*(?P<async>async\s+)?"
                      rf"(?:function\b\s*\*?\s*{NAME}?\s*\(|\(|(?P<bare>{NAME})\s*=>)", re.M)
EXPORT_LIST = re.compile(r"^[ \t]*export\s*\{(?P<names>[^}]*)\}", re.M)
CJS_OBJECT = re.compile(r"^[ \t]*module\.exports\s*=\s*\{(?P<names>[^}]*)\}", re.M)
TOKEN = re.compile(r"===|!==|==|!=|<=|>=|=>|&&|\|\||\?\?|\+\+|--|\+=|-=|\*\*|>>>?|<<|<|>|[+\-*]"
                   r"|(?<![\w$.])(?:true|false)(?![\w$])|(?<![\w$.])\d+(?:\.\d+)?(?![\w$.])")
SWAP = {"===": "!==", "!==": "===", "==": "!=", "!=": "==", "<": ">=", ">=": "<", ">": "<=", "<=": ">",
        "+": "-", "-": "+", "*": "/", "&&": "||", "||": "&&", "true": "false", "false": "true"}
KIND = {"===": "compare", "!==": "compare", "==": "compare", "!=": "compare", "<": "compare", ">=": "compare",
        ">": "compare", "<=": "compare", "+": "arith", "-": "arith", "*": "arith", "&&": "boolean",
        "||": "boolean", "true": "boolean", "false": "boolean"}
RETURNED = re.compile(r"\breturn\s+(-?\d+(?:\.\d+)?|true|false|\"[^\"\n]*\"|'[^'\n]*')\s*[;}\n]")
KIND_ORDER = ("return", "compare", "arith", "boolean", "constant")


@dataclass(frozen=True)
class JsFunction:
    """An exported function: its export name, where its body is, and its parameter list's text."""

    file: str  # relative to the service
    name: str
    line: int
    params: str
    body: tuple[int, int]  # character offsets in the module's text
    is_async: bool


@dataclass(frozen=True)
class JsMutant:
    kind: str
    line: int
    description: str
    source: str


def source_files(home: Path) -> list[Path]:
    """The service's own JS/TS modules: no tests, components, configs, dependencies or build output (and no
    file whose name is more than a plain path: it would reach the LLM's prompt as the module to import)."""
    return sorted(p for p in home.rglob("*") if p.suffix in SOURCE_EXTENSIONS and p.is_file()
                  and not set(p.relative_to(home).parts[:-1]) & SKIP_PARTS and not SKIP_NAME.search(p.name)
                  and PLAIN_PATH.fullmatch(p.relative_to(home).as_posix()))


def exported_functions(text: str, file: str) -> list[JsFunction]:
    """The named exports of a module that are functions (ESM ``export``, ``export {..}``, CommonJS ``exports``)."""
    code = blank(text)
    listed = _listed(code)
    found: dict[str, JsFunction] = {}
    for match in [*DECLARATION.finditer(code), *ASSIGNED.finditer(code)]:
        local = str(match.group("name") or match.groupdict().get("cjs"))
        cjs = match.groupdict().get("cjs")
        exported = cjs or (local if match.group("export") else listed.get(local))
        if not exported or exported[0].isupper() or exported in found:  # components and classes are not targets
            continue
        function = _function(text, code, match, exported, file)
        if function is not None:
            found[exported] = function
    return sorted(found.values(), key=lambda f: f.line)


def blank(text: str) -> str:
    """``text`` with the insides of strings, template literals and comments replaced by spaces."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i) or text.startswith("/*", i):
            end = text.find("\n" if text[i + 1] == "/" else "*/", i + 2)
            end = n if end < 0 else end + (0 if text[i + 1] == "/" else 2)
            _fill(out, i, end)
            i = end
        elif text[i] in "\"'`":
            end = i + 1
            while end < n and text[end] != text[i] and (text[i] == "`" or text[end] != "\n"):
                end += 2 if text[end] == "\\" else 1
            _fill(out, i + 1, min(end, n))
            i = end + 1
        else:
            i += 1
    return "".join(out)


def mutants(text: str, function: JsFunction, *, limit: int = 4) -> list[JsMutant]:
    """Up to ``limit`` one-change versions of the module, each changing ``function``'s body, varied by kind."""
    start, end = function.body
    code = blank(text)
    points: list[tuple[str, int, int, str]] = []  # kind, start, end, replacement
    for match in RETURNED.finditer(text, start, end):
        if code[match.start()] != " ":  # not inside a string or comment
            points.append(("return", match.start(1), match.end(1), _other(match.group(1))))
    for match in TOKEN.finditer(code, start, end):
        token = match.group()
        if token in SWAP:
            points.append((KIND[token], match.start(), match.end(), SWAP[token]))
        elif token[0].isdigit():
            points.append(("constant", match.start(), match.end(), _other(token)))
    points.sort(key=lambda p: (KIND_ORDER.index(p[0]), p[1]))
    chosen = [next(p for p in points if p[0] == kind) for kind in KIND_ORDER if any(p[0] == kind for p in points)]
    chosen += [p for p in points if p not in chosen]
    out = []
    for kind, at, stop, new in chosen[:limit]:
        line = text.count("\n", 0, at) + 1
        out.append(JsMutant(kind, line, f"line {line}: {text[at:stop]} -> {new}", text[:at] + new + text[stop:]))
    return out


def split_params(params: str) -> list[str]:
    """The parameter list split at its top-level commas."""
    code, parts, depth, last = blank(params), [], 0, 0
    for i, char in enumerate(code):
        depth += (char in "([{<") - (char in ")]}>")
        if char == "," and depth == 0:
            parts.append(params[last:i].strip())
            last = i + 1
    parts.append(params[last:].strip())
    return [p for p in parts if p]


def _function(text: str, code: str, match: re.Match[str], name: str, file: str) -> JsFunction | None:
    line = text.count("\n", 0, match.start()) + 1
    head = code[match.start():match.end()]
    bare = match.groupdict().get("bare")
    if bare:  # x => ...
        params, after = bare, match.end()
    else:
        close = _closing(code, match.end() - 1)
        if close is None:
            return None
        params, after = text[match.end():close], close + 1
        if "function" not in head:  # (a, b) => ...: the body follows the arrow
            arrow = code.find("=>", after)
            if arrow < 0 or code[after:arrow].strip()[:1] not in ("", ":"):
                return None
            after = arrow + 2
        else:  # function f(a, b) {...}: the body is the next block (after a TypeScript return type)
            after = code.find("{", after)
            if after < 0:
                return None
    start = len(code) - len(code[after:].lstrip())
    if code.startswith("{", start):
        close = _closing(code, start)
        end = None if close is None else close + 1
    else:
        end = _expression_end(code, start)
    return None if end is None else JsFunction(file, name, line, params, (start, end), "async" in head)


def _listed(code: str) -> dict[str, str]:
    """Local name -> exported name from ``export { a, b as c }`` and ``module.exports = { a, b: c }``."""
    out: dict[str, str] = {}
    for match in EXPORT_LIST.finditer(code):
        for item in match.group("names").split(","):
            words = item.split()
            if words:
                out[words[0]] = words[2] if len(words) == 3 and words[1] == "as" else words[0]
    for match in CJS_OBJECT.finditer(code):
        for item in match.group("names").split(","):
            key, _, local = (part.strip() for part in item.partition(":"))
            if re.fullmatch(NAME, key) and re.fullmatch(NAME, local or key):
                out[local or key] = key
    return out


def _closing(code: str, open_at: int) -> int | None:
    """The index of the bracket closing the one at ``open_at``."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = []
    for i in range(open_at, len(code)):
        if code[i] in pairs:
            stack.append(pairs[code[i]])
        elif stack and code[i] == stack[-1]:
            stack.pop()
            if not stack:
                return i
    return None


def _expression_end(code: str, start: int) -> int:
    """Where an arrow function's expression body ends: a ; or a line end outside brackets."""
    depth = 0
    for i in range(start, len(code)):
        depth += (code[i] in "([{") - (code[i] in ")]}")
        if depth < 0 or (depth == 0 and code[i] in ";,\n" and not code[i + 1:].lstrip().startswith(
                ("?", ":", ".", "&&", "||", "+", "-", "*"))):
            return i
    return len(code)


def _other(literal: str) -> str:
    """A different constant of the same kind."""
    if literal in ("true", "false"):
        return SWAP[literal]
    if literal[0] in "\"'":
        return '""' if len(literal) > 2 else '"x"'
    return str(int(literal) + 1) if literal.lstrip("-").isdigit() else str(float(literal) + 1)


def _fill(out: list[str], start: int, end: int) -> None:
    for i in range(start, end):
        if out[i] != "\n":
            out[i] = " "
