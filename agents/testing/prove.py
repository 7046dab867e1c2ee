"""Proving a generated test: it runs, passes on the current code, adds coverage, and kills a mutant."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

from agents.testing.codemap import CodeItem, measure
from agents.testing.mutation import mutants
from agents.testing.report import Candidate
from agents.tools import run_tool
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

TEST_TIMEOUT_S = 60
MUTANTS_PER_TEST = 4


class Prover:
    """Runs candidate tests in a scratch copy of the service, with its isolated virtualenv."""

    def __init__(self, python: Path, scratch: Path, settings: Settings, data_dir: Path,
                 generated_dir: str, covered: set[tuple[str, int]], *, timeout_s: float = TEST_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.python = python
        self.scratch = scratch
        self.settings = settings
        self.data_dir = data_dir
        self.generated = scratch / generated_dir
        self.generated.mkdir(exist_ok=True)
        self.covered = set(covered)
        self.kept_files: list[Path] = []

    def prove(self, target: CodeItem, code: str, *, origin: str, slug: str) -> Candidate:
        """Check one candidate; a kept one stays in the scratch tree for the final run."""
        name = f"test_gen_{slug}.py"
        verdict = Candidate(target=f"{target.module}:{target.qualname}", file_name=name, origin=origin,
                            kept=False, reason="", code=code)
        try:
            ast.parse(code)
        except SyntaxError as exc:
            return verdict.model_copy(update={"reason": f"does not parse: {exc.msg} (line {exc.lineno})"})
        path = self.generated / name
        path.write_text(code)
        verdict = self._check(target, path, verdict)
        if verdict.kept:
            self.kept_files.append(path)
        else:
            path.unlink(missing_ok=True)
        logger.info("generated test %s for %s: %s", name, verdict.target, verdict.reason)
        return verdict

    def _check(self, target: CodeItem, path: Path, verdict: Candidate) -> Candidate:
        test = str(path.relative_to(self.scratch))
        try:
            rc, cov, output = measure(self.python, self.scratch, [test], settings=self.settings,
                                      data_dir=self.data_dir, timeout=self.timeout_s)
        except OrchestraError as exc:
            return verdict.model_copy(update={"reason": f"did not finish: {exc.message}"})
        if rc == 5:
            return verdict.model_copy(update={"reason": "collects no tests"})
        if rc != 0:
            return verdict.model_copy(update={"reason": "fails against the current code: " + _first_error(output)})
        new = cov.lines() - self.covered
        if not new:
            return verdict.model_copy(update={"reason": "adds no coverage"})
        tried, killed = self._mutation(target, test)
        update = {"mutants_tried": tried, "mutants_killed": killed, "lines_added": len(new)}
        if tried == 0:
            return verdict.model_copy(update={**update, "reason": "no mutant of the target could be made"})
        if killed == 0:
            return verdict.model_copy(update={**update, "reason": f"passes against all {tried} mutants: "
                                                                  "it does not check the result"})
        self.covered |= new
        return verdict.model_copy(update={**update, "kept": True,
                                          "reason": f"kept: +{len(new)} lines, kills {killed}/{tried} mutants"})

    def _mutation(self, target: CodeItem, test: str) -> tuple[int, int]:
        module = self.scratch / target.file
        original = module.read_text()
        killed = 0
        made = mutants(original, target.qualname, limit=MUTANTS_PER_TEST)
        try:
            for mutant in made:
                module.write_text(mutant.source)
                killed += self._fails(test)
        finally:
            module.write_text(original)
        return len(made), killed

    def _fails(self, test: str) -> bool:
        try:
            proc = run_tool([str(self.python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
                            cwd=self.scratch, settings=self.settings, timeout=self.timeout_s,
                            extra_env={"PYTHONDONTWRITEBYTECODE": "1"})
        except OrchestraError:
            return True  # the mutant made it hang: the test noticed
        return proc.returncode != 0


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("E ", "FAILED", "ERROR")):
            return line.strip()[:200]
    return output.strip().splitlines()[-1][:200] if output.strip() else "no output"
