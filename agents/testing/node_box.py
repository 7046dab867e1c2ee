"""Running chosen test files of a Node service in its test box, for test generation, and reading the outcome.

The service's runner (Vitest or Jest) runs from the cached ``node_modules`` on a throwaway copy of
the service, through :func:`agents.testing.node._run`: in the Docker sandbox with no network,
``node_modules`` read-only and a time limit; on this host under the same time limit. Vitest runs
its files in worker threads and Jest in band, so stopping the runner at the time limit stops
everything it started.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.testing import node
from orchestra.errors import OrchestraError
from orchestra.settings import Settings


@dataclass(frozen=True)
class SuiteOutcome:
    """One test file's result: did it load, how many assertions passed and failed, the first message."""

    loaded: bool
    passed: int
    failed: int
    message: str
    hung: bool = False  # the run was stopped at its time limit

    @property
    def ok(self) -> bool:
        return self.loaded and self.failed == 0 and self.passed > 0


class Box:
    """A service copy (``work``) beside its ``node_modules``, where chosen test files run under a time limit."""

    def __init__(self, work: Path, modules: Path, reports: Path, settings: Settings, runner: str,
                 manifest: dict[str, Any], *, timeout_s: float) -> None:
        self.work, self.modules, self.reports, self.settings = work, modules, reports, settings
        self.runner, self.manifest, self.timeout_s = runner, manifest, timeout_s
        self.runs = 0
        reports.mkdir(parents=True, exist_ok=True)

    def run(self, files: list[str], *, coverage: bool = False) -> tuple[dict[str, SuiteOutcome], int]:
        """Run ``files`` (all tests when empty); outcomes by file relative to the copy, and the exit status.

        A run past the time limit raises OrchestraError ("did not finish within Ns").
        """
        self.runs += 1
        out = self.reports / f"results-{self.runs}.json"
        proc = node._run([*self._command(out, coverage), *self._filters(files)], work=self.work,
                         modules=self.modules, reports=self.reports, settings=self.settings, timeout=self.timeout_s)
        return self._outcomes(out, proc), proc.returncode

    def coverage(self) -> float | None:
        """Line coverage of the last run with ``coverage=True``."""
        try:
            summary = json.loads((self.reports / "coverage" / "coverage-summary.json").read_text())
            return round(float(summary["total"]["lines"]["pct"]), 1)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _command(self, out: Path, coverage: bool) -> list[str]:
        binary = str(self.modules / "node_modules" / ".bin" / self.runner)
        if self.runner == "jest":
            args = [binary, "--ci", "--runInBand", "--json", f"--outputFile={out}"]
            return args + (["--coverage", "--coverageReporters=json-summary",
                            f"--coverageDirectory={self.reports / 'coverage'}"] if coverage else ["--coverage=false"])
        args = [binary, "run", "--no-cache", "--pool=threads", "--reporter=json", f"--outputFile={out}"]
        deps = {**(self.manifest.get("dependencies") or {}), **(self.manifest.get("devDependencies") or {})}
        if coverage and any(p in deps for p in node.COVERAGE_PROVIDERS):
            return args + ["--coverage.enabled=true", "--coverage.reporter=json-summary",
                           "--coverage.reportOnFailure=true", f"--coverage.reportsDirectory={self.reports}/coverage"]
        return args + ["--coverage.enabled=false"]

    def _filters(self, files: list[str]) -> list[str]:
        if self.runner == "jest":  # Jest takes patterns: match exactly these paths
            return [re.escape(f) + "$" for f in files]
        return files

    def _outcomes(self, out: Path, proc: subprocess.CompletedProcess[str]) -> dict[str, SuiteOutcome]:
        try:
            report = json.loads(out.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-300:]
            raise OrchestraError(f"{self.runner} wrote no report (exit status {proc.returncode}): {tail}",
                                 hint="run the service's tests by hand to see why the runner stops") from exc
        outcomes = {}
        for suite in report.get("testResults") or []:
            cases = suite.get("assertionResults") or []
            failed = [c for c in cases if c.get("status") == "failed"]
            message = (failed[0].get("failureMessages") or [""])[0] if failed else suite.get("message") or ""
            name = node._relative(str(suite.get("name") or ""), self.work) or ""
            outcomes[name] = SuiteOutcome(loaded=bool(cases), passed=sum(c.get("status") == "passed" for c in cases),
                                          failed=len(failed), message=node._first(message))
        return outcomes
