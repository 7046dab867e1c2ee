"""Rule checks on the added lines of JavaScript and TypeScript files, as review.RULES are for Python.

Each rule is a pattern on one added line. Lines that are only a comment, or only a string (a
message, a fixture), are not code: they are skipped, and a trailing ``// comment`` is cut off
before matching, so a rule's name in a comment does not trip it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from agents.findings import Finding, Severity

TOOL = "review"
EXTENSIONS = (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts")
COMMENT_ONLY = re.compile(r"^\s*(//|/\*|\*)")
STRING_ONLY = re.compile(r"""^\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`$]*`)\s*[,;+)]?\s*$""")
TRAILING_COMMENT = re.compile(r"""\s//(?!.*["'`]).*$""")  # `// ...` with no quote after it: not inside a string
SENSITIVE = r"(?:password|passwd|secret|token|api_?key|credential|req(?:uest)?\.body)"
# A string built from parts: a template literal with ${...} or a quoted string joined with +.
BUILT_STRING = r"""(?:`[^`]*\$\{|"(?:[^"\\]|\\.)*"\s*\+|'(?:[^'\\]|\\.)*'\s*\+|\w+\s*\+\s*["'])"""

JS_RULES: list[tuple[str, re.Pattern[str], Severity, str, str]] = [
    ("debugger-left-in", re.compile(r"^\s*debugger\s*;?\s*$"), Severity.ERROR,
     "a debugger statement is left in the code", "remove it before merging"),
    ("eval-call", re.compile(r"(?<![\w.$])eval\s*\(|\bnew\s+Function\s*\("), Severity.WARNING,
     "evaluates a string as code", "parse the input (JSON.parse) or call the function directly"),
    ("command-injection", re.compile(r"(?:(?<![\w.$])|\b(?:child_process|cp|childProcess)\.)(?:exec|execSync)\s*\(\s*"
                                     + BUILT_STRING), Severity.WARNING,
     "runs a shell command built from a string with values in it",
     "use execFile/spawn with a list of arguments (no shell)"),
    ("shell-true", re.compile(r"\bshell\s*:\s*true\b"), Severity.WARNING,
     "runs a command through the shell", "pass a list of arguments with shell: false"),
    ("xss-dangerously-set-inner-html", re.compile(r"\bdangerouslySetInnerHTML\b"), Severity.WARNING,
     "renders raw HTML into the page", "render text (React escapes it) or sanitise the HTML first"),
    ("xss-inner-html", re.compile(r"\.(?:inner|outer)HTML\s*(?:\+?=)(?!=)"), Severity.WARNING,
     "writes raw HTML into the page", "set textContent, or build elements with createElement"),
    ("tls-verify-off", re.compile(r"\brejectUnauthorized\s*:\s*false\b|NODE_TLS_REJECT_UNAUTHORIZED\s*=\s*['\"]?0"),
     Severity.WARNING, "turns off TLS certificate verification",
     "keep certificate checks on (point `ca` at a CA bundle instead)"),
    ("insecure-random", re.compile(r"(?i)(?=.*\bMath\.random\s*\()(?=.*(?:token|secret|password|nonce|salt|session|"
                                   r"otp|api_?key|csrf))"), Severity.WARNING,
     "Math.random() is predictable and is used here for a secret value",
     "use crypto.randomBytes / crypto.randomUUID (or crypto.getRandomValues in the browser)"),
    ("logs-sensitive-data", re.compile(r"(?i)\bconsole\.(?:log|info|debug|warn|error)\s*\(.*\b" + SENSITIVE),
     Severity.WARNING, "logs a request body or a secret", "log only the fields you need, never secrets"),
    ("sql-injection", re.compile(r"(?i)(?:(?<![\w$])|\.)(?:query|execute|raw)\s*\(\s*" + BUILT_STRING),
     Severity.WARNING,
     "builds an SQL statement from a string with values in it",
     "pass the values as parameters (`query('... WHERE id = $1', [id])`)"),
    ("todo-added", re.compile(r"//\s*(TODO|FIXME|XXX)\b"), Severity.INFO,
     "adds a TODO", "open an issue for it or finish it"),
]


def is_js(path: str) -> bool:
    """Whether ``path`` is a JavaScript or TypeScript source file."""
    return path.endswith(EXTENSIONS) and "/node_modules/" not in f"/{path}"


def js_findings(lines: Iterable[tuple[str, int, str]]) -> list[Finding]:
    """Findings of JS_RULES on added lines given as (file, line, text); lines of other files are ignored."""
    findings = []
    for file, number, text in lines:
        if not is_js(file):
            continue
        todo = JS_RULES[-1]
        if todo[1].search(text):  # a TODO lives in a comment: checked before comments are skipped
            findings.append(_finding(file, number, todo))
        code = _code(text)
        if code is None:
            continue
        findings += [_finding(file, number, rule) for rule in JS_RULES[:-1] if rule[1].search(code)]
    return findings


def _code(text: str) -> str | None:
    """The code on a line without its trailing comment; None for a comment-only or string-only line."""
    if COMMENT_ONLY.match(text) or STRING_ONLY.match(text) or not text.strip():
        return None
    return TRAILING_COMMENT.sub("", text)


def _finding(file: str, line: int, rule: tuple[str, re.Pattern[str], Severity, str, str]) -> Finding:
    name, _, severity, message, suggestion = rule
    return Finding(tool=TOOL, rule=name, file=file, line=line, severity=severity, message=message,
                   suggestion=suggestion)
