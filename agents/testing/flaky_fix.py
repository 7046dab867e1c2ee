"""A suggested fix for each flaky test, offered only when it holds.

After :func:`agents.testing.flaky.settle`, where a model is configured, each test judged flaky (at most
:data:`MAX_ASKS` per service and run) gets one ask (prompts/fix_flaky_test.md): its file, the code it
calls when that is found cheaply, the evidence of its runs and the failure message. The answer is whole
files, and only ``.py`` files under the service's ``tests/`` folder are taken; anything else (the
service's code, an absolute path, ``..``, a symbolic link on the way, a ``conftest.py``, more than
:data:`MAX_CHANGED_LINES` changed lines) is refused before anything runs. An accepted fix is applied to
a scratch copy of the service and the test is re-run alone ``testing.fix_runs`` times through
:func:`agents.testing.flaky.rerun` (the re-runs' own box); it is kept only if every run passes, and then,
when the suite is cheap, once more in the suite's order. A kept fix is offered as a unified diff in the
decision's ``fix`` (so in ``test_results``), never committed; a fix not kept says which run failed.
Everything stays inside what is left of ``testing.timeout``.
"""
from __future__ import annotations

import ast
import difflib
import logging
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agents.pysource import SKIP_DIRS
from agents.testing import flaky
from agents.testing.venvs import run_python
from orchestra.errors import OrchestraError
from orchestra.llm import LLM, LLMError

if TYPE_CHECKING:
    from agents.context import AgentContext
    from agents.testing.stage import ServiceTests

logger = logging.getLogger(__name__)

TESTS_DIR = "tests"
MAX_ASKS = 3  # per service and run: one ask per flaky test
MAX_FILES = 5
MAX_CHANGED_LINES = 200
MAX_FILE_CHARS = 20_000  # a test file larger than this is not sent: a whole-file answer would not fit
MAX_CODE_CHARS = 4_000
MIN_LEFT_S = 5.0  # of testing.timeout, to ask at all
SUITE_CHECK_MAX_S = 30.0  # a suite slower than this is not run again for the order check


class FixedFile(BaseModel):
    """One changed file, whole."""

    path: str = Field(description="path relative to the service folder, under tests/ (e.g. tests/test_pay.py)")
    content: str = Field(description="the file's complete new content")


class FlakyTestFix(BaseModel):
    """A fix to a flaky test: the changed files under tests/, whole, and why it removes the flakiness."""

    explanation: str = Field(description="one or two sentences: what made the test flaky and what the fix does")
    files: list[FixedFile] = Field(default_factory=list)


class FixRefused(Exception):
    """An answer that is not run: it reaches outside tests/, or is too large, or changes nothing."""


@dataclass(frozen=True)
class Proof:
    held: int  # consecutive runs alone that passed
    why: str  # why the fix is not kept; "" when it is
    suite_order: str = "not run"  # passed | failed | not checked: why


@dataclass(frozen=True)
class Change:
    path: str  # relative to the service folder
    old: str
    new: str


def suggest(ctx: AgentContext, result: ServiceTests, *, junit: Path, python: Path, home: Path, started: float,
            extra: list[str]) -> None:
    """Ask for a fix to each flaky test of ``result`` and prove it; the outcome goes into its decision's ``fix``."""
    chosen = [d for d in result.decisions if d["verdict"] == "flaky"]
    if not chosen or not LLM.from_settings(ctx.settings, redis=ctx.redis, bus=ctx.bus).available:
        return
    by_test = {c.test: c for c in flaky.cases(junit, home) if c.test}
    suite_s = sum(c.seconds for c in by_test.values())
    deadline = started + ctx.config.testing.timeout
    for slot, decision in enumerate(chosen, 1):
        test = decision["test"]
        if slot > MAX_ASKS:
            decision["fix"] = _outcome(test, "not asked", f"at most {MAX_ASKS} fixes are asked for per service")
        elif deadline - time.monotonic() < MIN_LEFT_S:
            decision["fix"] = _outcome(test, "not asked", "testing.timeout was spent")
        else:
            ctx.progress(f"{result.service}: asking the model for a fix to {test}")
            scratch = ctx.settings.run_dir(ctx.run.id) / "flaky-fix" / result.service / str(slot)
            llm = LLM.from_settings(ctx.settings, redis=ctx.redis, bus=ctx.bus, max_retries=1,
                                    timeout_s=min(60.0, deadline - time.monotonic()))  # the ask fits the budget too
            try:
                decision["fix"] = _one(ctx, llm, decision, by_test.get(test), python=python, home=home,
                                       scratch=scratch, deadline=deadline, extra=extra, suite_s=suite_s)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            logger.info("run %s: fix for %s: %s", ctx.run.id, test, decision["fix"]["reason"])


def _one(ctx: AgentContext, llm: LLM, decision: dict[str, Any], case: flaky.Case | None, *, python: Path,
         home: Path, scratch: Path, deadline: float, extra: list[str], suite_s: float) -> dict[str, Any]:
    test = decision["test"]
    test_file = test.split("::")[0]
    if case is None or not case.target or Path(case.rootdir) != home:
        return _outcome(test, "not asked", "the test does not run with the service folder as pytest's rootdir")
    if not test_file.startswith(f"{TESTS_DIR}/") or not (home / test_file).is_file():
        return _outcome(test, "not asked", f"the test is not in a file under {TESTS_DIR}/")
    source = (home / test_file).read_text(errors="replace")
    if len(source) > MAX_FILE_CHARS:
        return _outcome(test, "not asked", f"its file is over {MAX_FILE_CHARS} characters")
    try:
        answer = llm.structured("fix_flaky_test", {
            "test": test, "test_file": test_file, "test_source": source, "evidence": evidence(decision),
            "under_test": called_code(source, case.name, home) or "(not found)",
            "message": decision.get("message") or "(none)"}, FlakyTestFix, run_id=ctx.run.id, max_tokens=8192)
    except LLMError as exc:
        return _outcome(test, "no answer", f"the model gave no fix: {exc.message}")
    try:
        changes = check(answer, home)
    except FixRefused as exc:
        return _outcome(test, "refused", f"refused, not run: {exc}")
    patch = diff(changes, _prefix(ctx.workspace, home))
    proof = prove(ctx, case, changes, python=python, home=home, scratch=scratch, deadline=deadline,
                  extra=extra, suite_s=suite_s)
    runs = ctx.config.testing.fix_runs
    fix = {**_outcome(test, "not kept" if proof.why else "kept", proof.why or f"held in {runs} of {runs} runs alone"),
           "runs": runs, "runs_passed": proof.held, "suite_order": proof.suite_order,
           "files": [c.path for c in changes], "explanation": answer.explanation[:500]}
    if not proof.why:
        fix["patch"] = patch
    return fix


def check(answer: FlakyTestFix, home: Path) -> list[Change]:
    """The answer's files as changes, or :class:`FixRefused` saying what is wrong (nothing is run)."""
    if not answer.files:
        raise FixRefused("the answer changes no file")
    if len(answer.files) > MAX_FILES:
        raise FixRefused(f"the answer changes {len(answer.files)} files; at most {MAX_FILES}")
    changes: list[Change] = []
    for file in answer.files:
        path = allowed_path(file.path, home)
        if any(c.path == path for c in changes):
            raise FixRefused(f"the answer names {path} twice")
        old = (home / path).read_text(errors="replace") if (home / path).is_file() else ""
        changes.append(Change(path, old, file.content))
    changed = sum(_changed_lines(c) for c in changes)
    if not changed:
        raise FixRefused("the answer changes nothing")
    if changed > MAX_CHANGED_LINES:
        raise FixRefused(f"the answer changes {changed} lines; a fix to a test changes at most {MAX_CHANGED_LINES}")
    return changes


def allowed_path(raw: str, home: Path) -> str:
    """``raw`` when it names a Python file under the service's tests/ that a fix may change."""
    shown = raw[:80]
    if not raw or len(raw) > 200 or "\\" in raw or any(ord(c) < 32 for c in raw):
        raise FixRefused(f"`{shown}` is not a file path")
    pure = PurePosixPath(raw)
    if pure.is_absolute() or raw.startswith("~"):
        raise FixRefused(f"`{shown}` is an absolute path; a fix names files relative to the service folder")
    if any(part in ("", ".", "..") for part in raw.split("/")):
        raise FixRefused(f"`{shown}` climbs out of its folder (`..`) or is not written plainly")
    if pure.parts[0] != TESTS_DIR or len(pure.parts) < 2:
        raise FixRefused(f"`{shown}` is outside {TESTS_DIR}/: a fix changes the test, never the service's code")
    if pure.suffix != ".py":
        raise FixRefused(f"`{shown}` is not a Python file")
    if pure.name == "conftest.py":
        raise FixRefused(f"`{shown}` is a conftest: it runs for every test of the suite, not only the flaky one")
    for depth in range(1, len(pure.parts) + 1):
        if home.joinpath(*pure.parts[:depth]).is_symlink():
            raise FixRefused(f"`{shown}` is, or is inside, a symbolic link")
    if not (home / raw).resolve().is_relative_to((home / TESTS_DIR).resolve()):
        raise FixRefused(f"`{shown}` resolves outside {TESTS_DIR}/")
    return raw


def prove(ctx: AgentContext, case: flaky.Case, changes: list[Change], *, python: Path, home: Path, scratch: Path,
          deadline: float, extra: list[str], suite_s: float) -> Proof:
    """Run the test alone ``testing.fix_runs`` times on a patched copy, then once in the suite's order."""
    testing = ctx.config.testing
    copy = scratch / "service"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns(*SKIP_DIRS, "*.pyc"), symlinks=True)
    for change in changes:
        (copy / change.path).parent.mkdir(parents=True, exist_ok=True)
        (copy / change.path).write_text(change.new)
    moved = replace(case, target=str(copy) + case.target[len(str(home)):], rootdir=str(copy))
    reports = scratch / "reports"
    for index in range(1, testing.fix_runs + 1):
        left = deadline - time.monotonic()
        if left < 1:
            return Proof(index - 1, f"testing.timeout was spent after {index - 1} of {testing.fix_runs} runs")
        attempt = flaky.rerun(moved, index, python=python, home=copy, reports=reports, settings=ctx.settings,
                              timeout=min(left, testing.timeout))
        if attempt.outcome != "passed":
            note = f": {attempt.note}" if attempt.note else ""
            return Proof(index - 1, f"run {index} of {testing.fix_runs} alone {attempt.outcome}{note}")
    order = _order(ctx, moved, python=python, copy=copy, reports=reports, deadline=deadline, extra=extra,
                   suite_s=suite_s)
    if order == "failed":
        return Proof(testing.fix_runs, f"held in {testing.fix_runs} of {testing.fix_runs} runs alone, then failed "
                                       "in the suite's order", order)
    return Proof(testing.fix_runs, "", order)


def _order(ctx: AgentContext, case: flaky.Case, *, python: Path, copy: Path, reports: Path, deadline: float,
           extra: list[str], suite_s: float) -> str:
    """The patched test once more, in the whole suite's order: passed, failed, or why it was not checked."""
    left = deadline - time.monotonic()
    if suite_s > SUITE_CHECK_MAX_S or left < 2 * suite_s + 5:
        return f"not checked: the suite takes {suite_s:.0f}s" if suite_s > SUITE_CHECK_MAX_S else \
            "not checked: testing.timeout was nearly spent"
    out = reports / "suite.xml"
    try:
        run_python(python, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                            f"--junitxml={out}", *extra], cwd=copy, settings=ctx.settings, timeout=left,
                   writable=[reports])
    except OrchestraError as exc:
        return f"not checked: {exc.message[:200]}"
    found = [c.outcome for c in flaky.cases(out, copy) if c.test == case.test]
    return "passed" if found == ["passed"] else "failed"


def evidence(decision: dict[str, Any]) -> str:
    """The decision's runs as lines: "run 1: in the suite (2 of 2), failed, 0.01s"."""
    lines = [f"failed {decision['failures']} of {decision['runs']} runs"]
    for i, a in enumerate(decision.get("attempts") or [], 1):
        where = f"in the suite ({a['position']})" if a["mode"] == flaky.SUITE and a.get("position") else \
            "in the suite" if a["mode"] == flaky.SUITE else "alone"
        took = f", {a['seconds']}s" if a.get("seconds") is not None else ""
        lines.append(f"run {i}: {where}, {a['outcome']}{took}")
    return "\n".join(lines)


def called_code(source: str, name: str, home: Path) -> str:
    """The service's own top-level functions the test calls by name (outside tests/), when found cheaply."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    func = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                 and n.name == re.sub(r"\[.*$", "", name)), None)
    called = {n.func.id for n in ast.walk(func) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)} \
        if func is not None else set()
    found: list[str] = []
    for path in sorted(home.glob("*.py"))[:30] if called else []:  # the service's top-level modules: cheap
        if path.is_symlink():
            continue
        text = path.read_text(errors="replace")
        try:
            module = ast.parse(text)
        except SyntaxError:
            continue
        found += [f"# {path.name}\n{ast.get_source_segment(text, n)}" for n in module.body
                  if isinstance(n, ast.FunctionDef) and n.name in called]
    return "\n\n".join(found)[:MAX_CODE_CHARS]


def diff(changes: list[Change], prefix: str) -> str:
    """A unified diff of the changes, with paths from the repository's root (``git apply`` takes it)."""
    out: list[str] = []
    for c in changes:
        old = f"a/{prefix}{c.path}" if c.old else "/dev/null"
        out += difflib.unified_diff(c.old.splitlines(keepends=True), c.new.splitlines(keepends=True),
                                    fromfile=old, tofile=f"b/{prefix}{c.path}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def summary(decisions: list[dict[str, Any]]) -> str:
    """The thread's words for the kept fixes: "a suggested fix for tests/x.py::t held in 5 of 5 runs: offered"."""
    kept = [d["fix"] for d in decisions if (d.get("fix") or {}).get("status") == "kept"]
    return "; ".join(f"a suggested fix for {f['test']} held in {f['runs_passed']} of {f['runs']} runs: offered"
                     for f in kept)


def _changed_lines(change: Change) -> int:
    return sum(1 for line in difflib.unified_diff(change.old.splitlines(), change.new.splitlines(), lineterm="")
               if line[:1] in "+-" and not line.startswith(("+++", "---")))


def _prefix(workspace: Path, home: Path) -> str:
    try:
        rel = home.resolve().relative_to(workspace.resolve())
    except ValueError:
        return ""
    return "" if str(rel) == "." else f"{rel.as_posix()}/"


def _outcome(test: str, status: str, reason: str) -> dict[str, Any]:
    return {"test": test, "status": status, "reason": reason}
