"""The test stage: run each service's own tests, with coverage, in an isolated virtualenv."""
from __future__ import annotations

import json
import logging
import shlex
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.analysis.risk import RiskLevel
from agents.context import AgentContext, StageResult
from agents.pysource import SKIP_DIRS
from agents.testing import flaky, flaky_fix, flaky_record
from agents.testing.testgen import generate_tests
from agents.testing.venvs import ensure_venv, run_python
from orchestra.config.model import Testing
from orchestra.errors import OrchestraError
from orchestra.llm import LLM

logger = logging.getLogger(__name__)


@dataclass
class Failure:
    test: str
    file: str | None
    line: int | None
    message: str


@dataclass
class ServiceTests:
    """One service's test outcome."""

    service: str
    ran: bool
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    coverage: float | None = None
    failures: list[Failure] = field(default_factory=list)
    note: str = ""
    runner: str = "pytest"  # vitest or jest for a Node service
    decisions: list[dict[str, Any]] = field(default_factory=list)  # flaky, broken, quarantined: agents.testing.flaky
    tolerated: int = 0  # failing tests that do not block (flaky, quarantined); ``failures`` holds the others

    @property
    def ok(self) -> bool:
        return self.failed + self.errors <= self.tolerated


def run(ctx: AgentContext) -> StageResult:
    """Run the tests of every service of the run; the gate fails on any failing test."""
    if not ctx.config.testing.enabled:
        return StageResult(True, "testing is disabled in devops_orchestra.yaml", {"services": {}})
    if ctx.config.project.language not in ("python", "node"):
        ctx.progress(f"no test runner for {ctx.config.project.language} yet: tests skipped")
        return StageResult(True, f"tests skipped: {ctx.config.project.language} is not supported yet",
                           {"services": {}})
    results = [test_service(ctx, name) for name in (ctx.run.services or ctx.config.service_names())]
    result = _verdict(results)
    result.data["generated"] = generate(ctx, [r for r in results if r.ran])
    return result


def generate(ctx: AgentContext, ran: list[ServiceTests]) -> dict[str, object]:
    """Proven tests for uncovered code (Python's, or a Node service's uncalled exports), offered as files;
    skipped for low-risk changes."""
    from agents.testing.testgen_node import generate_node_tests  # here: it imports node, which imports this module
    if ctx.run.risk == RiskLevel.LOW.value:
        ctx.progress("low-risk change: test generation skipped")
        return {}
    llm = LLM.from_settings(ctx.settings, redis=ctx.redis, bus=ctx.bus)
    reports: dict[str, object] = {}
    for tests in ran:
        home = ctx.workspace / (ctx.config.service(tests.service).path or ".")
        ctx.progress(f"{tests.service}: generating tests for uncovered code")
        out_dir = ctx.settings.run_dir(ctx.run.id) / "generated-tests" / tests.service
        if tests.runner == "pytest":
            report = generate_tests(home, python=ensure_venv(home, ctx.settings), settings=ctx.settings, llm=llm,
                                    run_id=ctx.run.id, service=tests.service, out_dir=out_dir)
        else:
            report = generate_node_tests(home, settings=ctx.settings, testing=ctx.config.testing,
                                         service=tests.service, out_dir=out_dir, llm=llm, run_id=ctx.run.id,
                                         reports=ctx.settings.run_dir(ctx.run.id) / "reports" / tests.service,
                                         coverage_before=tests.coverage)
        ctx.progress(report.summary())
        reports[tests.service] = report.event_data()
    return reports


def test_service(ctx: AgentContext, service: str) -> ServiceTests:
    """Run one service's tests under coverage and read the JUnit and coverage reports."""
    home = ctx.workspace / (ctx.config.service(service).path or ".")
    from agents.testing import flaky_node, node  # imported here: they build this module's ServiceTests
    if node.is_node_service(home):
        started = time.monotonic()
        tested = node.test_service(ctx, service, home)
        if tested.ran:
            flaky_node.settle(ctx, tested, home, started=started)
        _record(ctx, tested, passed=[])
        return tested
    if not has_tests(home):
        ctx.progress(f"{service}: no tests found")
        return ServiceTests(service, ran=False, note="no tests found")
    extra = pytest_args(ctx.config.testing)
    ctx.progress(f"{service}: preparing an isolated virtualenv")
    python = ensure_venv(home, ctx.settings)
    reports = ctx.settings.run_dir(ctx.run.id) / "reports" / service
    reports.mkdir(parents=True, exist_ok=True)
    ctx.progress(f"{service}: running tests")
    started = time.monotonic()
    run_python(python, ["-m", "coverage", "run", "--source=.", f"--data-file={reports / '.coverage'}",
                        "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                        f"--junitxml={reports / 'junit.xml'}", *extra],
               cwd=home, settings=ctx.settings, timeout=ctx.config.testing.timeout, writable=[reports])
    result = read_junit(service, reports / "junit.xml")
    flaky.settle(ctx, result, junit=reports / "junit.xml", python=python, home=home, reports=reports,
                 started=started)
    flaky_fix.suggest(ctx, result, junit=reports / "junit.xml", python=python, home=home, started=started,
                      extra=extra)
    _record(ctx, result, passed=[c.test for c in flaky.cases(reports / "junit.xml", home)
                                 if c.test and c.outcome == "passed"])
    cov = run_python(python, ["-m", "coverage", "json", f"--data-file={reports / '.coverage'}",
                              "-o", str(reports / "coverage.json")], cwd=home, settings=ctx.settings, timeout=120,
                     writable=[reports])
    if cov.returncode == 0:
        result.coverage = round(json.loads((reports / "coverage.json").read_text())["totals"]
                                ["percent_covered"], 1)
    return result


def _record(ctx: AgentContext, result: ServiceTests, *, passed: list[str]) -> None:
    """Add this run's failing tests (and the suite runs of those already recorded) to the service's record."""
    if result.decisions or passed:
        flaky_record.update(ctx.redis, ctx.config.project.name, result.service, run_id=ctx.run.id,
                            decisions=result.decisions, passed=passed)


def pytest_args(testing: Testing) -> list[str]:
    """What testing.framework and testing.command mean for a Python service: pytest's extra arguments.

    The stage runs pytest under coverage itself, so a command acts only as a pytest invocation
    (its arguments are added, never run through a shell); anything else is refused, not ignored.
    """
    if testing.framework not in ("pytest", "unittest"):
        raise OrchestraError(f"testing.framework `{testing.framework}` does not run Python services",
                             hint="set testing.framework to pytest (it also runs unittest tests)")
    if not testing.command:
        return []
    words = shlex.split(testing.command)
    for prefix in (["python", "-m", "pytest"], ["python3", "-m", "pytest"], ["pytest"]):
        if words[:len(prefix)] == prefix:
            return words[len(prefix):]
    raise OrchestraError(f"testing.command `{testing.command}` is not a pytest command; Python services are "
                         "tested with pytest under coverage",
                         hint="write it as `python -m pytest <arguments>` (e.g. `python -m pytest -q -k smoke`) "
                              "or leave it out")


def has_tests(home: Path) -> bool:
    return any(not (set(p.relative_to(home).parts) & SKIP_DIRS)
               for pattern in ("test_*.py", "*_test.py") for p in home.rglob(pattern))


def read_junit(service: str, path: Path) -> ServiceTests:
    """Counts and failures from pytest's JUnit XML (xunit1: with file and line)."""
    if not path.exists():
        return ServiceTests(service, ran=True, errors=1, note="pytest produced no report",
                            failures=[Failure("(collection)", None, None, "pytest did not run")])
    result = ServiceTests(service, ran=True)
    for case in ET.parse(path).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if case.find("skipped") is not None:
            result.skipped += 1
        elif problem is None:
            result.passed += 1
        else:
            result.failed += problem.tag == "failure"
            result.errors += problem.tag == "error"
            name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
            line = case.get("line")
            result.failures.append(Failure(name, case.get("file"), int(line) + 1 if line else None,
                                           (problem.get("message") or "").strip()[:300]))
    return result


def _verdict(results: list[ServiceTests]) -> StageResult:
    ran = [r for r in results if r.ran]
    failed = [r for r in ran if not r.ok]
    total = {k: sum(getattr(r, k) for r in ran) for k in ("passed", "failed", "errors", "skipped")}
    decisions = [d for r in ran for d in r.decisions]
    total.update({v: sum(d["verdict"] == v for d in decisions) for v in ("flaky", "broken", "quarantined")})
    covs = [r.coverage for r in ran if r.coverage is not None]
    data = {"services": {r.service: {**asdict(r), "ok": r.ok} for r in results}, "counts": total,
            "coverage": round(sum(covs) / len(covs), 1) if covs else None}
    if failed:
        first = failed[0].failures[0] if failed[0].failures else None
        where = f"{first.test} ({first.file}:{first.line}): {first.message}" if first else failed[0].note
        summary = f"{sum(len(r.failures) for r in failed)} test(s) failed; first: {where}"
    elif not ran:
        summary = "no tests found in any service"
    else:
        summary = f"{total['passed']} passed, {total['skipped']} skipped" + \
            (f", coverage {data['coverage']}%" if covs else "")
    if flaky.summary(decisions):
        summary += f"; {flaky.summary(decisions)}"
    if flaky_fix.summary(decisions):
        summary += f"; {flaky_fix.summary(decisions)}"
    return StageResult(not failed, summary, data)
