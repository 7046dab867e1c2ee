"""Node services' tests: ``npm ci``, then the package's own tests under Vitest or Jest, in the test box.

As for Python (:mod:`agents.testing.venvs`), dependencies are installed once per lock file into the
worker's cache and mounted read-only into each run. ``npm ci --ignore-scripts`` installs them, so no
package's install script runs while the network is there; with ``ORCHESTRA_SANDBOX=docker`` it runs in
an install box of the Node base image, and the tests in a test box with no network.

Tools write next to the sources (Vite bundles its config beside it), so the tests run on a throwaway
copy of the service folder placed beside the cached ``node_modules``: Node, Vite and ``npm run``'s
PATH find the dependencies by walking up from the sources, and the service's own checkout is never
written to. The runner's JSON report and istanbul's json-summary land in the run's report folder.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from agents.build.detect import UnknownStack, detect_stack
from agents.context import AgentContext
from agents.testing import sandbox
from agents.testing.stage import Failure, ServiceTests
from agents.tools import run_tool
from orchestra.config.model import Testing
from orchestra.errors import OrchestraError
from orchestra.settings import Settings

LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")
NPM_PLACEHOLDER = "no test specified"  # `npm init`'s test script, which only fails
COVERAGE_PROVIDERS = ("@vitest/coverage-v8", "@vitest/coverage-istanbul")
INSTALL_TIMEOUT_S = 600
SKIP_COPY = shutil.ignore_patterns("node_modules", ".git", "coverage", "dist", ".next")
# npm's settings that an install box may see (never a token from the worker's environment).
NPM_ENV = ("NPM_CONFIG_REGISTRY", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def is_node_service(home: Path) -> bool:
    """Whether the service in ``home`` is a Node one, as the build detects it (package.json, no Python)."""
    try:
        return detect_stack(home).language == "node"
    except UnknownStack:
        return False


def test_service(ctx: AgentContext, service: str, home: Path) -> ServiceTests:
    """Install the package's dependencies, run its tests and read the runner's JSON and coverage reports."""
    manifest = _manifest(home)
    command, runner = test_command(ctx.config.testing, manifest, service)
    if not command:
        ctx.progress(f"{service}: no test script in package.json")
        return ServiceTests(service, ran=False, note="no test script in package.json", runner=runner)
    reports = ctx.settings.run_dir(ctx.run.id) / "reports" / service
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    ctx.progress(f"{service}: installing its npm dependencies (npm ci)")
    modules = ensure_modules(home, ctx.settings)
    ctx.progress(f"{service}: running tests ({shlex.join(command)})")
    through_npm = command[:2] in (["npm", "test"], ["npm", "run"]) and "--" not in command
    args = [*command, *(["--"] if through_npm else []), *reporter_args(runner, manifest, reports)]
    work = Path(tempfile.mkdtemp(prefix=f"run-{ctx.run.id}-", dir=modules))
    try:
        shutil.copytree(home, work, ignore=SKIP_COPY, symlinks=True, dirs_exist_ok=True)
        proc = _run(args, work=work, modules=modules, reports=reports, settings=ctx.settings,
                    timeout=ctx.config.testing.timeout)
        return read_report(service, runner, reports, proc, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_command(testing: Testing, manifest: dict[str, Any], service: str) -> tuple[list[str], str]:
    """The command a Node service's tests run with, and its runner (vitest or jest); [] when it has none.

    testing.command acts when it is an npm or npx command; a pytest command is the Python services'
    (a mixed project has one testing section), so a Node service then runs ``npm test``.
    """
    deps = {**(manifest.get("dependencies") or {}), **(manifest.get("devDependencies") or {})}
    words = shlex.split(testing.command or "")
    if words and words[0] not in ("npm", "npx") and not _is_pytest(words):
        raise OrchestraError(f"testing.command `{testing.command}` does not run the Node service {service}",
                             hint="write it as `npm test`, `npm run <script>` or `npx vitest run <arguments>` "
                                  "(it runs without a shell), or leave it out to run `npm test`")
    if testing.framework in ("mocha", "go", "junit"):
        raise OrchestraError(f"testing.framework `{testing.framework}` does not run the Node service {service}: "
                             "the stage reads Vitest's and Jest's reports",
                             hint="set testing.framework to jest or npm, or leave it out")
    named = next((r for r in ("vitest", "jest") if r in words), None)
    runner = named or ("jest" if testing.framework == "jest" else next((r for r in ("vitest", "jest") if r in deps),
                                                                         None))
    if runner is None or runner not in deps:
        raise OrchestraError(f"{service}: package.json declares neither vitest nor jest (or not the one "
                             f"testing.framework or testing.command names): the stage reads their JSON reports",
                             hint="add vitest or jest to devDependencies and commit the lock file")
    if words and not _is_pytest(words):
        return words, runner
    script = str((manifest.get("scripts") or {}).get("test") or "")
    return (["npm", "test"] if script and NPM_PLACEHOLDER not in script else []), runner


def reporter_args(runner: str, manifest: dict[str, Any], reports: Path) -> list[str]:
    """Arguments that make the runner write its JSON report and istanbul's json-summary into ``reports``
    (and its per-function json, which test generation reads)."""
    if runner == "jest":
        return ["--ci", "--json", f"--outputFile={reports / 'results.json'}", "--coverage",
                "--coverageReporters=json-summary", "--coverageReporters=json",
                f"--coverageDirectory={reports / 'coverage'}"]
    deps = {**(manifest.get("dependencies") or {}), **(manifest.get("devDependencies") or {})}
    # The cached node_modules is read-only: Vitest's results cache would fail writing into it.
    args = ["--no-cache", "--reporter=json", f"--outputFile={reports / 'results.json'}"]
    if any(p in deps for p in COVERAGE_PROVIDERS):  # without a provider Vitest would ask to install one
        args += ["--coverage.enabled=true", "--coverage.reporter=json-summary", "--coverage.reporter=json",
                 "--coverage.reportOnFailure=true",
                 f"--coverage.reportsDirectory={reports / 'coverage'}"]
    return args


def ensure_modules(home: Path, settings: Settings) -> Path:
    """A folder holding ``node_modules`` for the package's lock file, installed once into the cache."""
    lock = next((home / name for name in LOCKFILES if (home / name).is_file()), None)
    if lock is None:
        raise OrchestraError(f"{home.name}: no package-lock.json, so its dependencies cannot be installed "
                             "reproducibly (npm ci needs one)",
                             hint="run `npm install` in the service folder and commit package-lock.json")
    boxed = settings.sandbox == "docker"
    digest = hashlib.sha256((f"box:{node_image_id(settings)}" if boxed else f"host:{_host_node(settings)}").encode())
    for path in (home / "package.json", lock):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = settings.cache / "node-modules" / f"{'box-' if boxed else ''}{digest.hexdigest()[:16]}"
    if (target / "node_modules").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="npm-", dir=target.parent))
    try:
        for path in (home / "package.json", lock):
            shutil.copyfile(path, staging / path.name)
        proc = _npm_ci(staging, settings)
        if proc.returncode != 0:
            tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise OrchestraError(f"npm ci failed for {home.name}: {tail}",
                                 hint="check package.json and package-lock.json agree (`npm install` rewrites the "
                                      "lock file); packages are installed without their install scripts")
        (staging / "node_modules").mkdir(exist_ok=True)  # a package with no dependencies
        staging.rename(target)  # atomic: a concurrent install of the same lock file loses harmlessly
    except OSError:
        if not (target / "node_modules").is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def node_image_id(settings: Settings) -> str:
    """The Node base image's id; the box refuses to start without it rather than run tests unboxed."""
    return sandbox.image_id(settings, settings.node_base_image, kind="Node ", script="scripts/build-node-base-image")


def read_report(service: str, runner: str, reports: Path, proc: subprocess.CompletedProcess[str],
                work: Path) -> ServiceTests:
    """Counts and failures from the runner's JSON report (Vitest's is Jest's format), coverage from json-summary."""
    result = ServiceTests(service, ran=True, runner=runner)
    try:
        report = json.loads((reports / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-300:]
        result.errors, result.note = 1, f"{runner} wrote no report"
        result.failures.append(Failure("(run)", None, None, f"exit status {proc.returncode}: {tail}"))
        return result
    for suite in report.get("testResults") or []:
        _read_suite(result, suite, work)
    if proc.returncode != 0 and result.ok:  # e.g. an unhandled error after the tests, a coverage threshold
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-300:]
        result.errors += 1
        result.failures.append(Failure("(run)", None, None, f"{runner} exited with {proc.returncode}: {tail}"))
    try:
        result.coverage = round(float(json.loads((reports / "coverage" / "coverage-summary.json").read_text())
                                      ["total"]["lines"]["pct"]), 1)
    except (OSError, ValueError, KeyError, TypeError):
        result.coverage = None
    return result


def _read_suite(result: ServiceTests, suite: dict[str, Any], work: Path) -> None:
    file = _relative(str(suite.get("name") or ""), work)
    cases = suite.get("assertionResults") or []
    if not cases and suite.get("status") == "failed":  # the file did not load: an error, as pytest's collection
        result.errors += 1
        result.failures.append(Failure(file or "(suite)", file, None, _first(suite.get("message"))))
    for case in cases:
        status = case.get("status")
        if status == "passed":
            result.passed += 1
        elif status == "failed":
            result.failed += 1
            name = " > ".join([*(case.get("ancestorTitles") or []), str(case.get("title") or "")])
            messages = case.get("failureMessages") or [""]
            line = (case.get("location") or {}).get("line") or _line_in(messages[0], suite.get("name") or "")
            result.failures.append(Failure(name, file, line, _first(messages[0])))
        else:  # skipped, pending, todo, disabled
            result.skipped += 1


def _line_in(stack: str, path: str) -> int | None:
    """The line of the test file in a failure's stack (the first frame in it)."""
    match = re.search(re.escape(path) + r":(\d+):\d+", stack) if path else None
    return int(match.group(1)) if match else None


def _relative(path: str, work: Path) -> str | None:
    try:
        return str(Path(path).relative_to(work)) if path else None
    except ValueError:
        return path


def _first(message: object) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(message or "")).strip()
    return text.splitlines()[0][:300] if text else ""


def _run(args: list[str], *, work: Path, modules: Path, reports: Path, settings: Settings,
         timeout: float) -> subprocess.CompletedProcess[str]:
    env = {"CI": "true", "NO_COLOR": "1", "npm_config_update_notifier": "false"}
    if settings.sandbox != "docker":
        return run_tool(args, cwd=work, settings=settings, timeout=timeout,
                        extra_env={**env, "npm_config_cache": str(settings.cache / "npm")})
    return sandbox.run_box(args, cwd=work, settings=settings.with_(base_image=settings.node_base_image),
                           timeout=timeout, network="none", env=env,
                           mounts={work: "rw", modules / "node_modules": "ro", reports: "rw"})


def _npm_ci(staging: Path, settings: Settings) -> subprocess.CompletedProcess[str]:
    npm_cache = settings.cache / "npm"  # npm's download cache: repeated installs read from it
    npm_cache.mkdir(parents=True, exist_ok=True)
    # --prefer-offline: the lock file pins each tarball's hash, so a cached one needs no revalidation
    args = ["npm", "ci", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    env = {"npm_config_cache": str(npm_cache), "npm_config_update_notifier": "false"}
    if settings.build_ca_bundle is not None:
        env["NPM_CONFIG_CAFILE"] = str(settings.build_ca_bundle)
    if settings.sandbox != "docker":
        return run_tool(args, cwd=staging, settings=settings, timeout=INSTALL_TIMEOUT_S,
                        extra_env={"HOME": str(staging), **env})
    mounts = {staging: "rw", npm_cache: "rw"}
    if settings.build_ca_bundle is not None:
        mounts[settings.build_ca_bundle] = "ro"
    env.update({k: v for k, v in settings.tool_env.items() if k in NPM_ENV})
    return sandbox.run_box(args, cwd=staging, settings=settings.with_(base_image=settings.node_base_image),
                           timeout=INSTALL_TIMEOUT_S, mounts=mounts, env=env, network="host")


def _host_node(settings: Settings) -> str:
    node = shutil.which("node", path=settings.tool_env.get("PATH"))
    settings.cache.mkdir(parents=True, exist_ok=True)  # a new worker's cache folder may not exist yet
    proc = run_tool([node, "--version"], cwd=settings.cache, settings=settings, timeout=30) if node else None
    if proc is None or proc.returncode != 0:
        raise OrchestraError("node is not installed on this worker: Node services cannot be tested",
                             hint="apt-get install nodejs npm, or test in the sandbox (ORCHESTRA_SANDBOX=docker)")
    return proc.stdout.strip()


def _manifest(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / "package.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OrchestraError(f"{home / 'package.json'} is not valid JSON: {exc}",
                             hint="fix the JSON syntax (npm refuses the package as it is)") from exc
    if not isinstance(data, dict):
        raise OrchestraError(f"{home / 'package.json'} is not a JSON object", hint="npm expects {...} there")
    return data


def _is_pytest(words: list[str]) -> bool:
    return words[:1] == ["pytest"] or words[1:3] == ["-m", "pytest"]
