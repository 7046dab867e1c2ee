"""Generated tests for code without tests, each one proven before it is kept.

For every function or method the existing tests leave uncovered, candidate tests come from the
LLM when one is available (prompts/generate_tests.md), otherwise (or when none of the LLM's
survive) from the deterministic characterization generator (agents.testing.rules). A candidate
is kept only if it runs and passes against the current code, adds covered lines, and fails
against at least one mutant of its target function (agents.testing.mutation). Everything runs in a
scratch copy of the service with the given isolated virtualenv and time limits; the kept tests
are returned (and written to ``out_dir``) as files to offer, never committed.
"""
from __future__ import annotations

import ast
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

from agents.pysource import SKIP_DIRS
from agents.testing.codemap import CodeItem, Coverage, code_map, measure
from agents.testing.mutation import find_function
from agents.testing.prove import Prover
from agents.testing.report import Candidate, TestGenReport
from agents.testing.rules import candidate_inputs, observe, write_test
from orchestra.llm import LLM, NO_RUN, LLMError
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

GENERATED_DIR = "tests_generated"
OFFER_DIR = "tests"
MAX_SOURCE_CHARS = 6000
MAX_LLM_TESTS = 5


class GeneratedTest(BaseModel):
    """One pytest module."""

    name: str = Field(description="short snake_case name for the test module")
    code: str = Field(description="complete pytest module: imports and test functions")


class GeneratedTests(BaseModel):
    """Pytest modules testing the given function."""

    tests: list[GeneratedTest] = Field(default_factory=list)


def generate_tests(root: Path, *, python: Path, settings: Settings, llm: LLM | None = None,
                   run_id: str | None = None, service: str = "", out_dir: Path | None = None,
                   max_targets: int = 15, min_coverage: float = 50.0,
                   time_budget_s: float = 300.0, test_timeout_s: float = 60.0) -> TestGenReport:
    """Generate, prove and report tests for the uncovered code of the service at ``root``."""
    started = time.monotonic()
    use_llm = llm is not None and llm.available
    tokens_before = _tokens(llm, run_id)
    with tempfile.TemporaryDirectory(prefix="orchestra-testgen-") as tmp:
        scratch = _copy(root, Path(tmp) / "service")
        rc, before, _ = measure(python, scratch, [], settings=settings, data_dir=Path(tmp) / "cov")
        targets = select_targets(code_map(scratch, before), min_coverage, max_targets)
        prover = Prover(python, scratch, settings, Path(tmp) / "cov", GENERATED_DIR, before.lines(),
                        timeout_s=test_timeout_s)
        candidates: list[Candidate] = []
        skipped_for_time = 0
        for target in targets:
            if time.monotonic() - started > time_budget_s:
                skipped_for_time += 1
                continue
            candidates += _for_target(target, prover, python, scratch, settings, llm if use_llm else None,
                                      run_id)
        after, together = _final(prover, python, scratch, settings, Path(tmp) / "cov", before)
    kept = {f"{OFFER_DIR}/{c.file_name}": c.code for c in candidates if c.kept}
    if out_dir is not None:
        _write(out_dir, kept)
    return TestGenReport(
        service=service or root.name, source=_source(candidates, use_llm),
        note=_note(use_llm, rc, skipped_for_time, together),
        coverage_before=before.percent, coverage_after=after.percent, targets=len(targets),
        candidates=candidates, kept_files=kept, seconds=round(time.monotonic() - started, 1),
        tokens=_tokens(llm, run_id) - tokens_before)


def select_targets(items: list[CodeItem], min_coverage: float, limit: int) -> list[CodeItem]:
    """Functions and methods with statements and less than ``min_coverage`` percent covered."""
    callables = [i for i in items if i.kind in ("function", "method") and i.statements
                 and i.coverage < min_coverage and not i.qualname.split(".")[-1].startswith("__")]
    callables.sort(key=lambda i: (-(len(i.statements) - len(i.covered)), i.file, i.line))
    return callables[:limit]


def _for_target(target: CodeItem, prover: Prover, python: Path, scratch: Path, settings: Settings,
                llm: LLM | None, run_id: str | None) -> list[Candidate]:
    results: list[Candidate] = []
    if llm is not None:
        for i, code in enumerate(_llm_candidates(target, scratch, llm, run_id)):
            results.append(prover.prove(target, code, origin="llm", slug=f"{_slug(target)}_{i}"))
    if not any(c.kept for c in results):
        rule_code = _rule_candidate(target, python, scratch, settings)
        if rule_code is not None:
            results.append(prover.prove(target, rule_code, origin="deterministic", slug=_slug(target)))
    return results


def _llm_candidates(target: CodeItem, scratch: Path, llm: LLM, run_id: str | None) -> list[str]:
    source, signature = _source_of(target, scratch)
    try:
        out = llm.structured("generate_tests", {"module": target.module, "function": target.qualname,
                                                "source": source, "signature": signature},
                             GeneratedTests, run_id=run_id, max_tokens=4096)
    except LLMError as exc:
        logger.info("run %s: no LLM tests for %s: %s", run_id, target.qualname, exc)
        return []
    return [t.code for t in out.tests[:MAX_LLM_TESTS]]


def _rule_candidate(target: CodeItem, python: Path, scratch: Path, settings: Settings) -> str | None:
    tree = ast.parse((scratch / target.file).read_text())
    func = find_function(tree, target.qualname)
    if func is None:
        return None
    ctors = None
    method = target.kind == "method" and not _decorated(func, "staticmethod")
    if method:
        init = find_function(tree, target.qualname.split(".")[0] + ".__init__")
        ctors = candidate_inputs(init, method=True) if init is not None else [()]
    observed = observe(python, scratch, target.module, target.qualname, candidate_inputs(func, method=method),
                       settings=settings, ctors=ctors)
    return write_test(target.module, target.qualname, observed)


def _decorated(func: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> bool:
    return any(isinstance(d, ast.Name) and d.id == name for d in func.decorator_list)


def _source_of(target: CodeItem, scratch: Path) -> tuple[str, str]:
    text = (scratch / target.file).read_text()
    tree = ast.parse(text)
    func = find_function(tree, target.qualname)
    node: ast.AST | None = func
    if "." in target.qualname:  # a method: show its class
        node = next((n for n in tree.body if isinstance(n, ast.ClassDef)
                     and n.name == target.qualname.split(".")[0]), func)
    segment = ast.get_source_segment(text, node) if node is not None else None
    signature = f"({ast.unparse(func.args)})" if func is not None else ""
    return (segment or "")[:MAX_SOURCE_CHARS], signature


def _final(prover: Prover, python: Path, scratch: Path, settings: Settings, data_dir: Path,
           before: Coverage) -> tuple[Coverage, bool]:
    """Coverage of the existing tests plus the kept tests, run together (which also checks they agree)."""
    if not prover.kept_files:
        return before, True
    rc, kept, output = measure(python, scratch, [GENERATED_DIR], settings=settings, data_dir=data_dir)
    if rc != 0:
        logger.warning("the kept tests failed when run together (exit %s): %s", rc, output[-500:])
    executed = {f: before.executed.get(f, set()) | kept.executed.get(f, set()) for f in before.statements}
    return Coverage(statements=before.statements, executed=executed), rc == 0


def _copy(root: Path, dest: Path) -> Path:
    ignore = shutil.ignore_patterns(*SKIP_DIRS, "*.pyc", "*.egg-info")
    shutil.copytree(root, dest, ignore=ignore, symlinks=True)
    return dest


def _write(out_dir: Path, files: dict[str, str]) -> None:
    for name, code in files.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)


def _slug(target: CodeItem) -> str:
    return re.sub(r"\W+", "_", f"{target.module}_{target.qualname}").strip("_").lower()


def _tokens(llm: LLM | None, run_id: str | None) -> int:
    return int(llm.budget.used(run_id or NO_RUN)["run_tokens"]) if llm is not None and llm.available else 0


def _source(candidates: list[Candidate], use_llm: bool) -> str:
    origins = {c.origin for c in candidates}
    if origins == {"llm", "deterministic"}:
        return "llm+deterministic"
    return "llm" if origins == {"llm"} or (use_llm and not origins) else "deterministic"


def _note(use_llm: bool, baseline_rc: int, skipped_for_time: int, together: bool) -> str:
    parts = ["tests written by the LLM, deterministic generator where it had none that held"] if use_llm \
        else ["no LLM configured (ANTHROPIC_API_KEY unset): used the deterministic generator"]
    if baseline_rc not in (0, 5):
        parts.append(f"the existing tests did not all pass (pytest exit {baseline_rc})")
    if not together:
        parts.append("the kept tests failed when run together: review them before adding them")
    if skipped_for_time:
        parts.append(f"{skipped_for_time} target(s) left for lack of time")
    return "; ".join(parts)
