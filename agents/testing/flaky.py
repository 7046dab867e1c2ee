"""Flaky tests told apart from broken ones.

After a service's suite ran, each failing test that ``testing.quarantine`` does not name is re-run
alone, ``testing.reruns`` times, in the same box (:func:`agents.testing.venvs.run_python`): one that
passes on any re-run is flaky and does not block unless ``testing.flaky_blocks``; one that fails every
time is broken and blocks, with its file and line, as before. A quarantined test is run and reported,
never blocking. Each decision keeps its inputs (runs, failures, each run's duration and whether it ran
in the suite or alone), for the ``test_results`` event and for :mod:`agents.testing.flaky_record`.

A test is named by its pytest node id relative to the service folder (``tests/test_pay.py::test_retry``)
and re-run by its absolute path with the suite's rootdir, so its conftest files and node id are the
suite's. Ids never pass through a shell: they are one argument each, after ``--``. Node services' tests
are re-run by :mod:`agents.testing.flaky_node` and decided here.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.testing.venvs import run_python
from orchestra.config.model import Testing
from orchestra.errors import OrchestraError

if TYPE_CHECKING:
    from agents.context import AgentContext
    from agents.testing.stage import Failure, ServiceTests

SUITE, ALONE = "suite", "alone"
MAX_RERUN_TESTS = 20  # more failing tests than this is a broken build, not flakiness: the rest are not re-run
SHOWN = 3  # test ids named in the thread's line


@dataclass
class Attempt:
    """One run of a test: in the suite (with its position) or alone."""

    mode: str  # suite | alone
    outcome: str  # passed | failed | error | skipped | missing (the re-run selected no test)
    seconds: float | None
    position: str | None = None  # "7 of 40": where it ran in the suite
    note: str = ""


@dataclass
class Decision:
    """What was decided about one test, and from what."""

    test: str
    verdict: str  # flaky | broken | quarantined
    blocking: bool
    reason: str
    runs: int
    failures: int
    file: str | None = None
    line: int | None = None
    message: str = ""
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """A testcase of a JUnit (xunit1) report, named as the stage names failures and by its node id."""

    key: str  # classname::name, as stage.read_junit names its failures
    name: str
    outcome: str
    seconds: float
    test: str = ""  # the node id relative to the service folder; "" when it names no test file
    target: str = ""  # what pytest re-runs: the absolute path, then ::Class::name[params]
    rootdir: str = ""


def cases(junit: Path, home: Path) -> list[Case]:
    """Every testcase of a report, in the order it ran."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return []
    out = []
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        outcome = next((tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None), "passed")
        outcome = {"failure": "failed"}.get(outcome, outcome)
        try:
            seconds = round(float(case.get("time") or 0), 3)
        except ValueError:
            seconds = 0.0
        out.append(Case(f"{classname}::{name}".strip(":"), name, outcome, seconds,
                        *_locate(classname, name, case.get("file"), home)))
    return out


def _locate(classname: str, name: str, file: str | None, home: Path) -> tuple[str, str, str]:
    """(node id relative to ``home``, re-run target, rootdir) of a testcase; empty when it cannot be named.

    ``file`` is relative to the suite's rootdir: ``home`` or the first folder above it holding that file.
    """
    if not file or not name or not classname:
        return "", "", ""
    rootdir = next((d for d in (home, *home.parents) if (d / file).is_file()), None)
    if rootdir is None:
        return "", "", ""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = rootdir.joinpath(*parts[:cut]).with_suffix(".py") if parts[:cut] else None
        if path is not None and path.is_file() and path.resolve().is_relative_to(rootdir.resolve()):
            rest = "".join(f"::{p}" for p in [*parts[cut:], name])
            shown = path.relative_to(home) if path.is_relative_to(home) else path.relative_to(rootdir)
            return f"{shown}{rest}", f"{path}{rest}", str(rootdir)
    return "", "", ""


def settle(ctx: AgentContext, result: ServiceTests, *, junit: Path, python: Path, home: Path,
           reports: Path, started: float) -> None:
    """Decide each failing test of ``result`` (flaky, broken or quarantined) and keep only blocking failures.

    The suite (begun at ``started``, monotonic) and its re-runs together stay within ``testing.timeout``."""
    testing = ctx.config.testing
    ran = cases(junit, home)
    by_key = {c.key: c for c in ran}
    position = {c.key: f"{i} of {len(ran)}" for i, c in enumerate(ran, 1)}
    deadline = started + testing.timeout
    rerun_count = 0
    for failure in list(result.failures):
        case = by_key.get(failure.test)
        first = Attempt(SUITE, case.outcome if case else "failed", case.seconds if case else None,
                        position.get(failure.test))
        test = case.test if case and case.test else failure.test
        if test in testing.quarantine:
            decision = decide(test, "quarantined", False, "quarantined: failed, not blocking", [first], failure)
        elif case is None or not case.target:
            decision = decide(test, "broken", True, "not re-run: it names no test pytest can select "
                                 "(a collection or set-up error)", [first], failure)
        elif rerun_count >= MAX_RERUN_TESTS:
            decision = decide(test, "broken", True, f"not re-run: more than {MAX_RERUN_TESTS} tests failed",
                                 [first], failure)
        else:
            rerun_count += 1
            if testing.reruns:
                ctx.progress(f"{result.service}: re-running {test} alone, {testing.reruns} time(s)")
            attempts = [first, *_reruns(ctx, case, testing, python=python, home=home, reports=reports,
                                        deadline=deadline)]
            decision = judge(test, attempts, testing, failure)
            if len(attempts) <= testing.reruns:
                decision.reason += f"; re-run {len(attempts) - 1} of {testing.reruns} times: testing.timeout was spent"
        apply(result, failure, decision)
    for case in ran:  # quarantined tests that passed are reported too
        if case.test in testing.quarantine and case.outcome in ("passed", "skipped"):
            result.decisions.append(asdict(Decision(case.test, "quarantined", False, f"quarantined: {case.outcome}",
                                                    1, 0, attempts=[Attempt(SUITE, case.outcome, case.seconds,
                                                                            position.get(case.key))])))


def _reruns(ctx: AgentContext, case: Case, testing: Testing, *, python: Path, home: Path, reports: Path,
            deadline: float) -> list[Attempt]:
    attempts = []
    for index in range(1, testing.reruns + 1):
        left = deadline - time.monotonic()
        if left < 1:
            break
        attempts.append(rerun(case, index, python=python, home=home, reports=reports, settings=ctx.settings,
                              timeout=min(left, testing.timeout)))
    return attempts


def rerun(case: Case, index: int, *, python: Path, home: Path, reports: Path, settings: Any,
          timeout: float) -> Attempt:
    """Run one test alone, as the suite ran it (same rootdir, so the same conftest files and node id)."""
    out = reports / f"rerun-{index}.xml"
    out.unlink(missing_ok=True)
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1", f"--junitxml={out}",
            f"--rootdir={case.rootdir}", "--", case.target]
    started = time.monotonic()
    try:
        run_python(python, args, cwd=home, settings=settings, timeout=timeout, writable=[reports])
    except OrchestraError as exc:
        return Attempt(ALONE, "error", round(time.monotonic() - started, 3), note=exc.message[:200])
    found = [c for c in cases(out, home) if c.name == case.name]
    if len(found) != 1:
        return Attempt(ALONE, "missing", round(time.monotonic() - started, 3),
                       note="the re-run selected no single test")
    return Attempt(ALONE, found[0].outcome, found[0].seconds)


def judge(test: str, attempts: list[Attempt], testing: Testing, failure: Failure) -> Decision:
    passed = any(a.outcome == "passed" for a in attempts)
    runs, failures = _counts(attempts)
    if not passed:
        why = f"failed {failures} of {runs} runs" if len(attempts) > 1 else \
            "failed; not re-run (testing.reruns is 0)" if not testing.reruns else "failed; not re-run"
        return decide(test, "broken", True, why, attempts, failure)
    rate = f"failed {failures} of {runs} runs"
    if testing.flaky_blocks:
        return decide(test, "flaky", True, f"{rate}, blocking (testing.flaky_blocks)", attempts, failure)
    return decide(test, "flaky", False, f"{rate}, not blocking", attempts, failure)


def decide(test: str, verdict: str, blocking: bool, reason: str, attempts: list[Attempt],
              failure: Failure) -> Decision:
    runs, failures = _counts(attempts)
    return Decision(test, verdict, blocking, reason, runs, failures, failure.file, failure.line,
                    failure.message, attempts)


def _counts(attempts: list[Attempt]) -> tuple[int, int]:
    """(runs, failures): a re-run that selected no test is evidence, not a run."""
    ran = [a for a in attempts if a.outcome != "missing"]
    return len(ran), sum(a.outcome in ("failed", "error") for a in ran)


def apply(result: ServiceTests, failure: Failure, decision: Decision) -> None:
    result.decisions.append(asdict(decision))
    if not decision.blocking:
        result.failures.remove(failure)
        result.tolerated += 1


def summary(decisions: list[dict[str, Any]]) -> str:
    """The thread's words for the decisions: "1 flaky test (failed 1 of 3 runs), not blocking: tests/..."."""
    parts = []
    for verdict, blocking in (("flaky", False), ("flaky", True), ("quarantined", False)):
        chosen = [d for d in decisions if d["verdict"] == verdict and d["blocking"] == blocking
                  and (verdict != "quarantined" or d["failures"])]
        if not chosen:
            continue
        names = ", ".join(d["test"] for d in chosen[:SHOWN]) + (f" and {len(chosen) - SHOWN} more"
                                                                 if len(chosen) > SHOWN else "")
        plural = "s" if len(chosen) > 1 else ""
        if verdict == "quarantined":
            parts.append(f"{len(chosen)} quarantined test{plural} failed, not blocking: {names}")
            continue
        runs, failed = sum(d["runs"] for d in chosen), sum(d["failures"] for d in chosen)
        how = "blocking (testing.flaky_blocks)" if blocking else "not blocking"
        parts.append(f"{len(chosen)} flaky test{plural} (failed {failed} of {runs} runs), {how}: {names}")
    return "; ".join(parts)
