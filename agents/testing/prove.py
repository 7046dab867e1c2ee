"""Proving a generated test: it runs, passes on the current code, adds coverage, and kills a mutant.

Before any of that it must stay inside the test: a candidate that reads the environment, starts
processes, opens sockets or URLs, or evaluates strings is refused without being run (the model
writing it may have been steered by the code it read).
"""
from __future__ import annotations

import ast
import logging
from pathlib import Path

from agents.testing.codemap import CodeItem, measure
from agents.testing.mutation import mutants
from agents.testing.report import Candidate
from agents.testing.venvs import run_python
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

TEST_TIMEOUT_S = 60
MUTANTS_PER_TEST = 4
# What a unit test of a function has no use for, and an exfiltrating one needs.
OUTSIDE_MODULES = frozenset({"subprocess", "socket", "urllib", "http", "requests", "httpx", "aiohttp", "ftplib",
                             "smtplib", "telnetlib", "ctypes", "multiprocessing", "pty", "importlib", "webbrowser"})
OS_CALLS = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "system", "popen", "fork", "forkpty",
                      "execl", "execle", "execlp", "execv", "execve", "execvp", "spawnl", "spawnv", "posix_spawn"})
BUILTINS = frozenset({"eval", "exec", "__import__"})


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
            tree = ast.parse(code)
        except SyntaxError as exc:
            return verdict.model_copy(update={"reason": f"does not parse: {exc.msg} (line {exc.lineno})"})
        reach = outside_reach(tree)
        if reach:
            return verdict.model_copy(update={"reason": f"refused without running it: it uses {reach}"})
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
            proc = run_python(self.python, ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
                              cwd=self.scratch, settings=self.settings, timeout=self.timeout_s,
                              extra_env={"PYTHONDONTWRITEBYTECODE": "1"})
        except OrchestraError:
            return True  # the mutant made it hang: the test noticed
        return proc.returncode != 0


def outside_reach(tree: ast.AST) -> str | None:
    """The first thing in a test that reaches outside it (environment, processes, network), or None."""
    return next((name for node in ast.walk(tree) for name in _outside(node)), None)


def _outside(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        names = [m for m in modules if m.split(".")[0] in OUTSIDE_MODULES]
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            names += [f"os.{a.name}" for a in node.names if a.name in OS_CALLS]
        return names
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
        return [f"os.{node.attr}"] if node.attr in OS_CALLS else []
    if isinstance(node, ast.Name):
        return [node.id] if node.id in BUILTINS else []
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/proc/" in node.value:
        return ["/proc"]
    return []


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("E ", "FAILED", "ERROR")):
            return line.strip()[:200]
    return output.strip().splitlines()[-1][:200] if output.strip() else "no output"
