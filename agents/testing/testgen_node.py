"""Generated tests for a Node service's exported functions that its own tests do not call, each proven.

Targets are the named exports of the service's JS/TS modules (agents.testing.jsfuncs) whose
function the Node test run's istanbul report (coverage-final.json) shows never called. For each
module a probe (agents.testing.node_probe) records what its targets return for inputs inferred from
their parameters and bodies, and a characterization test in the service's runner asserts it; with
an LLM configured, the model's tests (prompts/generate_tests_node.md) are tried first. A test is
kept only if it passes against the current code and fails against at least one mutant of its
target. Every run happens in the Node test box (agents.testing.node_box) under a time limit, and
kept tests are written to ``out_dir`` as files to offer, never committed.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agents.testing import jsfuncs, node, node_llm, node_probe
from agents.testing.node_box import Box, SuiteOutcome
from agents.testing.report import Candidate, TestGenReport
from orchestra.config.model import Testing
from orchestra.errors import OrchestraError
from orchestra.llm import LLM
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

MUTANTS_PER_TEST = 4
TEST_FILE = re.compile(r"\.(test|spec)\.[cm]?[jt]sx?$")



@dataclass
class Attempt:
    """A candidate test on its way through the prover."""

    target: jsfuncs.JsFunction
    code: str
    origin: str
    file: str  # where it sits in the service, relative
    spec: str  # how it imports the target module
    reason: str = ""
    tried: int = 0
    killed: int = 0
    kept: bool = False


def generate_node_tests(home: Path, *, settings: Settings, testing: Testing, service: str, reports: Path,
                        out_dir: Path | None = None, llm: LLM | None = None, run_id: str | None = None,
                        coverage_before: float | None = None, max_targets: int = 15,
                        time_budget_s: float = 300.0, test_timeout_s: float = 60.0) -> TestGenReport:
    """Generate, prove and report tests for ``home``'s uncalled exported functions (``reports``: the test run's)."""
    started = time.monotonic()
    manifest = node._manifest(home)
    _, runner = node.test_command(testing, manifest, service)
    modules = node.ensure_modules(home, settings)
    work = Path(tempfile.mkdtemp(prefix="testgen-", dir=modules))
    notes: list[str] = []
    attempts: list[Attempt] = []
    tokens = 0
    try:
        shutil.copytree(home, work, ignore=node.SKIP_COPY, symlinks=True, dirs_exist_ok=True)
        box = Box(work, modules, reports / "testgen", settings, runner, manifest, timeout_s=test_timeout_s)
        targets, known = find_targets(work, reports / "coverage" / "coverage-final.json")
        targets = targets[:max_targets]
        if not known:
            notes.append("no per-function coverage from the test run: every exported function was a target")
        use_llm = llm is not None and llm.available
        if use_llm and llm is not None:
            tokens = node_llm.tokens(llm, run_id)
            attempts += prove(box, [a for t in targets for a in _llm_attempts(t, work, llm, runner, run_id)])
            tokens = node_llm.tokens(llm, run_id) - tokens
        for file, group in _by_file(t for t in targets if not any(a.kept and a.target == t for a in attempts)):
            if time.monotonic() - started > time_budget_s:
                notes.append(f"{len(group)} target(s) in {file} left for lack of time")
                continue
            attempts += prove(box, _rule_attempts(box, file, group, runner, manifest))
        after = _final(box, attempts, coverage_before, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kept = {a.file: a.code for a in attempts if a.kept}
    if out_dir is not None:
        for name, code in kept.items():
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (out_dir / name).write_text(code)
    origins = {a.origin for a in attempts}
    source = "llm+deterministic" if len(origins) == 2 else ("llm" if origins == {"llm"} else "deterministic")
    lead = ("tests written by the LLM, deterministic generator where it had none that held" if use_llm
            else "no LLM configured (ANTHROPIC_API_KEY unset): used the deterministic generator")
    return TestGenReport(service=service, source=source, note="; ".join([lead, *notes]),
                         coverage_before=coverage_before or 0.0, coverage_after=after, targets=len(targets),
                         candidates=[_candidate(a) for a in attempts], kept_files=kept,
                         seconds=round(time.monotonic() - started, 1), tokens=tokens)


def find_targets(work: Path, coverage_final: Path) -> tuple[list[jsfuncs.JsFunction], bool]:
    """Exported functions the test run never called, and whether a per-function report was there to say so."""
    called = _called(coverage_final)
    targets = []
    for path in jsfuncs.source_files(work):
        rel = path.relative_to(work).as_posix()
        lines = next((v for k, v in (called or {}).items() if k == rel or k.endswith("/" + rel)), set())
        targets += [f for f in jsfuncs.exported_functions(path.read_text(errors="replace"), rel)
                    if f.line not in lines]
    return targets, called is not None


def prove(box: Box, attempts: list[Attempt]) -> list[Attempt]:
    """Keep the attempts that pass on the current code and fail against a mutant of their target."""
    live = [a for a in attempts if not a.reason]
    for attempt in live:
        (box.work / attempt.file).parent.mkdir(parents=True, exist_ok=True)  # a service with no tests folder yet
        (box.work / attempt.file).write_text(attempt.code)
    for attempt, outcome in zip(live, _outcomes(box, [a.file for a in live]), strict=True):
        if not outcome.ok:
            attempt.reason = _failure(outcome, "fails against the current code")
            (box.work / attempt.file).unlink(missing_ok=True)
    for attempt in (a for a in live if not a.reason):
        _mutate(box, attempt)
        if not attempt.kept:
            (box.work / attempt.file).unlink(missing_ok=True)
    return attempts


def _mutate(box: Box, attempt: Attempt) -> None:
    module = box.work / attempt.target.file
    made = jsfuncs.mutants(module.read_text(), attempt.target, limit=MUTANTS_PER_TEST)
    written: list[Path] = []
    tests = []
    try:
        for n, mutant in enumerate(made):
            copy = module.with_name(f"{module.stem}.orchestra-mutant-{n}{module.suffix}")
            copy.write_text(mutant.source)
            test = PurePosixPath(attempt.file).with_name(f"orchestra_mutant_{n}{_test_suffix(attempt.file)}")
            spec = _spec(str(test), PurePosixPath(attempt.target.file).with_name(copy.name).as_posix())
            (box.work / test).write_text(_retarget(attempt.code, attempt.spec, spec))
            written += [copy, box.work / test]
            tests.append(str(test))
        outcomes = _outcomes(box, tests)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    valid = [o for o in outcomes if o.loaded or o.hung]  # one that does not load is no mutant; one that hangs is
    attempt.tried, attempt.killed = len(valid), sum(o.hung or o.failed > 0 for o in valid)
    if not valid:
        attempt.reason = "no mutant of the target could be made"
    elif not attempt.killed:
        attempt.reason = f"passes against all {attempt.tried} mutants: it does not check the result"
    else:
        attempt.kept, attempt.reason = True, f"kept: kills {attempt.killed}/{attempt.tried} mutants"


def _outcomes(box: Box, files: list[str]) -> list[SuiteOutcome]:
    """Each file's outcome, all in one run; when that run hangs, each file alone (a hung one says so)."""
    if not files:
        return []
    try:
        found, _ = box.run(files)
    except OrchestraError as exc:
        hung = "did not finish" in exc.message
        if not hung or len(files) == 1:
            logger.info("test generation run stopped: %s", exc.message)
            return [SuiteOutcome(False, 0, 0, exc.message, hung=hung) for _ in files]
        return [o for f in files for o in _outcomes(box, [f])]
    missing = SuiteOutcome(False, 0, 0, "the runner did not run it (its test patterns leave it out)")
    return [found.get(f, missing) for f in files]


def _rule_attempts(box: Box, file: str, group: list[jsfuncs.JsFunction], runner: str,
                   manifest: dict[str, object]) -> list[Attempt]:
    """Probe one module's targets, then a characterization test for each that showed stable results."""
    text = (box.work / file).read_text(errors="replace")
    esm = _esm(text, file, manifest, box.work, runner)
    probe = f"{_test_dir(box.work)}/orchestra_probe{_suffix_for(file, box.work)}"
    out = box.reports / f"probe-{box.runs}.json"
    cases = {f.name: node_probe.candidate_inputs(f, text[f.body[0]:f.body[1]]) for f in group}
    (box.work / probe).parent.mkdir(parents=True, exist_ok=True)
    (box.work / probe).write_text(node_probe.probe_file(_spec(probe, file), cases, str(out), runner=runner, esm=esm))
    try:
        outcome = _outcomes(box, [probe])[0]
        seen = json.loads(out.read_text()) if out.is_file() else None
    finally:
        (box.work / probe).unlink(missing_ok=True)
    attempts = []
    for function in group:
        test = f"{_test_dir(box.work)}/orchestra_gen_{_slug(function)}{_suffix_for(file, box.work)}"
        spec = _spec(test, file)
        code = node_probe.characterization_test(function, spec, (seen or {}).get(function.name, []),
                                                runner=runner, esm=esm)
        reason = "" if code else ("nothing it returned could be pinned (no stable, plain results)" if seen is not None
                                  else _failure(outcome, f"not probed: {file} did not load or run"))
        attempts.append(Attempt(function, code or "", "deterministic", test, spec, reason=reason))
    return attempts


def _llm_attempts(target: jsfuncs.JsFunction, work: Path, llm: LLM, runner: str,
                  run_id: str | None) -> list[Attempt]:
    base = f"{_test_dir(work)}/orchestra_llm_{_slug(target)}"
    spec = _spec(base, target.file)
    written = node_llm.ask(target, (work / target.file).read_text(errors="replace"), spec, llm,
                           runner=runner, run_id=run_id)
    return [Attempt(target, code, "llm", f"{base}_{i}{_suffix_for(target.file, work)}", spec, reason)
            for i, (code, reason) in enumerate(written)]


def _final(box: Box, attempts: list[Attempt], before: float | None, notes: list[str]) -> float:
    """Coverage of the service's tests and the kept ones run together (which also checks they agree)."""
    if not any(a.kept for a in attempts):
        return before or 0.0
    try:
        found, rc = box.run([], coverage=True)
    except OrchestraError as exc:
        notes.append(f"the kept tests were not run together: {exc.message}")
        return before or 0.0
    if rc != 0 or not all(o.ok for f, o in found.items() if Path(f).name.startswith("orchestra_gen_")):
        notes.append("the kept tests failed when run together: review them before adding them")
    return box.coverage() or before or 0.0


def _called(coverage_final: Path) -> dict[str, set[int]] | None:
    """Per file (absolute, as the run saw it): the lines where a function that was called starts."""
    try:
        data = json.loads(coverage_final.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    out: dict[str, set[int]] = {}
    for file, info in data.items():
        for key, fn in (info.get("fnMap") or {}).items():
            if (info.get("f") or {}).get(key):
                out.setdefault(file, set()).update({fn["decl"]["start"]["line"], fn["loc"]["start"]["line"]})
    return out


def _by_file(targets: Iterable[jsfuncs.JsFunction]) -> list[tuple[str, list[jsfuncs.JsFunction]]]:
    groups: dict[str, list[jsfuncs.JsFunction]] = {}
    for target in targets:
        groups.setdefault(target.file, []).append(target)
    return list(groups.items())


def _test_dir(work: Path) -> str:
    """Where the service keeps its tests (so the runner's include patterns find generated ones too)."""
    found = _own_tests(work)
    return found[0].parent.relative_to(work).as_posix() if found else "tests"


def _suffix_for(module: str, work: Path) -> str:
    """``.test.js`` (``.ts`` for a TypeScript module), or ``.spec.…`` when that is how the service names its tests."""
    found = _own_tests(work)
    kind = TEST_FILE.search(found[0].name).group(1) if found else "test"  # type: ignore[union-attr]
    return f".{kind}.ts" if module.endswith((".ts", ".mts", ".cts")) else f".{kind}.js"


def _own_tests(work: Path) -> list[Path]:
    return sorted(p for p in work.rglob("*") if TEST_FILE.search(p.name) and "node_modules" not in p.parts
                  and not p.name.startswith("orchestra_"))


def _test_suffix(file: str) -> str:
    return file[file.rindex(".", 0, file.rindex(".")):]


def _spec(test_file: str, module: str) -> str:
    """How a test at ``test_file`` imports ``module`` (TypeScript without its extension, as runners resolve it)."""
    rel = PurePosixPath(*[".."] * len(PurePosixPath(test_file).parent.parts), module).as_posix()
    rel = rel if rel.startswith(".") else "./" + rel
    return re.sub(r"\.[cm]?ts$", "", rel)


def _retarget(code: str, spec: str, new: str) -> str:
    return code.replace(f'"{spec}"', f'"{new}"').replace(f"'{spec}'", f"'{new}'")


def _esm(text: str, file: str, manifest: dict[str, object], work: Path, runner: str) -> bool:
    """Vitest loads every test as ESM; under Jest, ESM only where the module (and so the service) is ESM."""
    if runner == "vitest":
        return True
    return file.endswith((".mjs", ".ts", ".mts")) or manifest.get("type") == "module" or \
        re.search(r"^\s*export\s", jsfuncs.blank(text), re.M) is not None


def _slug(function: jsfuncs.JsFunction) -> str:
    return re.sub(r"\W+", "_", f"{PurePosixPath(function.file).stem}_{function.name}").strip("_").lower()


def _failure(outcome: SuiteOutcome, what: str) -> str:
    if outcome.hung:
        return f"{what}: stopped at the time limit, it loops or waits forever ({outcome.message})"
    return f"{what}: {outcome.message}" if outcome.message else what


def _candidate(a: Attempt) -> Candidate:
    return Candidate(target=f"{a.target.file}:{a.target.name}", file_name=a.file, origin=a.origin, kept=a.kept,
                     reason=a.reason, mutants_tried=a.tried, mutants_killed=a.killed, code=a.code)
