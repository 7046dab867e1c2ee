"""Node services' failing tests re-run alone: the test's file with ``-t <its full name>``, Vitest or Jest.

As the suite (:mod:`agents.testing.node`), each re-run is a throwaway copy of the service folder beside
the cached ``node_modules``, in the test box with no network; the runner's JSON report says how the test
went. The decisions are :mod:`agents.testing.flaky`'s. A test is named ``file > name``.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agents.testing import flaky, node
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

if TYPE_CHECKING:
    from agents.context import AgentContext
    from agents.testing.stage import Failure, ServiceTests

_JS_SPECIAL = re.compile(r"[.*+?^${}()|[\]\\/]")


def settle(ctx: AgentContext, result: ServiceTests, home: Path, *, started: float) -> None:
    """Decide each failing test of a Node service (flaky, broken or quarantined); keep only blocking failures.

    It runs the suite's own steps (node's ``_manifest`` and ``_run``), so a re-run is boxed as the suite was."""
    testing = ctx.config.testing
    command, runner = node.test_command(testing, node._manifest(home), result.service)
    modules = node.ensure_modules(home, ctx.settings) if result.failures else home
    reports = ctx.settings.run_dir(ctx.run.id) / "reports" / result.service / "rerun"
    deadline, rerun_count = started + testing.timeout, 0
    for failure in list(result.failures):
        test = f"{failure.file} > {failure.test}" if failure.file else failure.test
        first = flaky.Attempt(flaky.SUITE, "failed", None)
        if test in testing.quarantine:
            decision = flaky.decide(test, "quarantined", False, "quarantined: failed, not blocking", [first],
                                    failure)
        elif not failure.file or failure.test == failure.file or rerun_count >= flaky.MAX_RERUN_TESTS:
            decision = flaky.decide(test, "broken", True, "not re-run: it names no single test (a file that "
                                    f"did not load, an error after the tests) or more than {flaky.MAX_RERUN_TESTS} "
                                    "tests failed", [first], failure)
        else:
            rerun_count += 1
            attempts = [first]
            for _ in range(testing.reruns):
                if deadline - time.monotonic() < 1:
                    break
                attempts.append(rerun(command, runner, result.service, failure, home=home, modules=modules,
                                      reports=reports, settings=ctx.settings,
                                      timeout=min(deadline - time.monotonic(), testing.timeout)))
            decision = flaky.judge(test, attempts, testing, failure)
        flaky.apply(result, failure, decision)


def rerun(command: list[str], runner: str, service: str, failure: Failure, *, home: Path, modules: Path,
          reports: Path, settings: Settings, timeout: float) -> flaky.Attempt:
    """One test alone: its file, and its full name (anchored, every character literal) as the name pattern."""
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    through_npm = command[:2] in (["npm", "test"], ["npm", "run"]) and "--" not in command
    report = ["--ci", "--json"] if runner == "jest" else ["--no-cache", "--reporter=json"]
    name = " ".join(failure.test.split(" > "))
    pattern = _JS_SPECIAL.sub(lambda m: "\\" + m.group(0), name) + "$"
    args = [*command, *(["--"] if through_npm else []), *report, f"--outputFile={reports / 'results.json'}",
            str(failure.file), "-t", pattern]
    work = Path(tempfile.mkdtemp(prefix="rerun-", dir=modules))
    began = time.monotonic()
    try:
        shutil.copytree(home, work, ignore=node.SKIP_COPY, symlinks=True, dirs_exist_ok=True)
        proc = node._run(args, work=work, modules=modules, reports=reports, settings=settings, timeout=timeout)
        tested = node.read_report(service, runner, reports, proc, work)
    except OrchestraError as exc:
        return flaky.Attempt(flaky.ALONE, "error", round(time.monotonic() - began, 3), note=exc.message[:200])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = round(time.monotonic() - began, 3)
    if any(f.test == failure.test for f in tested.failures):
        return flaky.Attempt(flaky.ALONE, "failed", seconds)
    if tested.passed >= 1 and not tested.failures:
        return flaky.Attempt(flaky.ALONE, "passed", seconds)
    return flaky.Attempt(flaky.ALONE, "missing", seconds, note="the re-run selected no test")
