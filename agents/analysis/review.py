"""Review of a diff: rule checks on the added lines always, plus an LLM review when one is available.

The diff is untrusted text: it goes to the model fenced as data (prompts/review_diff.md), and the
list of changed files only names that read as paths. What comes back is validated into typed
findings; findings on files the diff does not touch, or carrying what looks like a secret, are
dropped and counted in the note. LLM findings are warnings (the model proposes, code decides); the
rule checks can fail the gate (e.g. a committed secret).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from agents.analysis.review_js import js_findings
from agents.findings import Finding, Severity
from orchestra.llm import LLM, LLMError
from orchestra.redaction import redact

logger = logging.getLogger(__name__)

TOOL = "review"
MAX_DIFF_CHARS = 60_000
HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")
PATH_NAME = re.compile(r"[\w./@+-]{1,200}")  # a file name that cannot carry a sentence


class ReviewItem(BaseModel):
    """One concrete problem in the change."""

    file: str = Field(description="path of the changed file, as in the diff")
    line: int = Field(description="line number in the new version of the file")
    rule: str = Field(description="short kebab-case id, e.g. sql-injection")
    message: str
    suggestion: str


class ReviewOutput(BaseModel):
    """The review of the change: its problems (possibly none) and a one-sentence summary."""

    findings: list[ReviewItem] = Field(default_factory=list)
    summary: str = ""


class ReviewResult(BaseModel):
    findings: list[Finding]
    source: Literal["llm", "rules"]
    note: str
    summary: str = ""


@dataclass(frozen=True)
class AddedLine:
    file: str
    line: int
    text: str


RULES: list[tuple[str, re.Pattern[str], Severity, str, str]] = [
    ("debugger-left-in", re.compile(r"\b(breakpoint\(\)|pdb\.set_trace\(\)|import i?pdb)"), Severity.ERROR,
     "a debugger call is left in the code", "remove it before merging"),
    ("shell-true", re.compile(r"shell\s*=\s*True"), Severity.WARNING,
     "runs a command through the shell", "pass a list of arguments with shell=False"),
    ("tls-verify-off", re.compile(r"verify\s*=\s*False"), Severity.WARNING,
     "turns off TLS certificate verification", "keep verify=True (or point it at a CA bundle)"),
    ("eval-call", re.compile(r"(?<![\w.])eval\("), Severity.WARNING,
     "evaluates a string as code", "parse the input (json / ast.literal_eval) instead"),
    ("bare-except", re.compile(r"^\s*except\s*:"), Severity.WARNING,
     "a bare except also catches KeyboardInterrupt and SystemExit", "catch the exceptions you expect"),
    ("todo-added", re.compile(r"#\s*(TODO|FIXME|XXX)\b"), Severity.INFO,
     "adds a TODO", "open an issue for it or finish it"),
    ("print-debug", re.compile(r"^\s*print\("), Severity.INFO,
     "adds a print() call", "use logging"),
]


def review_diff(diff: str, *, llm: LLM | None, run_id: str | None = None) -> ReviewResult:
    """Review ``diff``; with an available ``llm`` also ask the model, else say the rules were used."""
    added = added_lines(diff)
    findings = rule_findings(added)
    if llm is None or not llm.available:
        return ReviewResult(findings=findings, source="rules",
                            note="no LLM configured (ANTHROPIC_API_KEY unset): rule-based review only")
    files = sorted({a.file for a in added})
    text = diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n[diff truncated]\n"
    try:
        out = llm.structured("review_diff", {"files": _listed(files), "diff": text}, ReviewOutput,
                             run_id=run_id)
    except LLMError as exc:
        logger.info("run %s: LLM review not done: %s", run_id, exc)
        return ReviewResult(findings=findings, source="rules",
                            note=f"LLM review not done ({exc.message}): rule-based review only")
    on_changed = [item for item in out.findings if item.file in files]
    kept = [_from_item(item) for item in on_changed if not _carries_secret(item)]
    note = "LLM review and rule checks" + _dropped(len(out.findings) - len(on_changed), "on unchanged files") \
        + _dropped(len(on_changed) - len(kept), "carrying secret-like text")
    return ReviewResult(findings=findings + kept, source="llm", note=note, summary=redact(out.summary))


def added_lines(diff: str) -> list[AddedLine]:
    """The added lines of a unified diff with their file and line number in the new version."""
    out: list[AddedLine] = []
    file, number = None, 0
    for raw in diff.splitlines():
        if raw.startswith("+++ "):
            path = raw[4:].strip()
            file = None if path == "/dev/null" else path.removeprefix("b/")
        elif match := HUNK.match(raw):
            number = int(match.group(1))
        elif file and raw.startswith("+"):
            out.append(AddedLine(file, number, raw[1:]))
            number += 1
        elif file and raw.startswith(" "):
            number += 1
    return out


def rule_findings(added: list[AddedLine]) -> list[Finding]:
    """Deterministic checks on added lines, including secrets committed in the change; JavaScript and
    TypeScript files get their own rules (agents.analysis.review_js)."""
    findings = []
    for line in added:
        if redact(line.text) != line.text:
            findings.append(Finding(tool=TOOL, rule="secret-in-diff", file=line.file, line=line.line,
                                    message="the change adds what looks like a secret",
                                    suggestion="remove it, rotate it, and read it from the environment"))
        python = line.file.endswith(".py")
        for rule, pattern, severity, message, suggestion in RULES:
            if (python or rule in ("tls-verify-off", "todo-added")) and pattern.search(line.text):
                findings.append(Finding(tool=TOOL, rule=rule, file=line.file, line=line.line,
                                        severity=severity, message=message, suggestion=suggestion))
    return findings + js_findings((a.file, a.line, a.text) for a in added)


def _listed(files: list[str]) -> str:
    """The changed files for the prompt; a name that is not a plain path stays in the fenced diff only."""
    plain = [f for f in files if PATH_NAME.fullmatch(f)]
    odd = len(files) - len(plain)
    return ", ".join(plain + ([f"{odd} file(s) with unusual names (see the diff)"] if odd else []))


def _dropped(count: int, why: str) -> str:
    return f"; {count} LLM finding(s) {why} dropped" if count else ""


def _carries_secret(item: ReviewItem) -> bool:
    """The model saw the diff redacted: a secret-looking value in its finding did not come from the change."""
    text = " ".join((item.file, item.rule, item.message, item.suggestion))
    return redact(text) != text


def _from_item(item: ReviewItem) -> Finding:
    return Finding(tool="llm-review", rule=item.rule, file=item.file, line=item.line,
                   severity=Severity.WARNING, message=redact(item.message), suggestion=redact(item.suggestion))
