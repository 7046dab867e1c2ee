"""Node services' tests run for real: npm ci from the registry (cached), Vitest or Jest, their JSON reports.

The fullstack example's web service is the subject; each test changes a copy of it. Without the Docker
engine the tests run on this host (``sandbox="none"``, as the other stage tests); the ``docker`` ones
run the same in the box and attack it.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.testing import node
from agents.testing import stage as test_agent
from agents.testing.stage import test_service as run_service_tests
from jobs.graph import TEST
from jobs.runner import execute_stage
from orchestra.config import load_config
from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStore
from tests.support.docker_services import DockerEnv
from tests.support.npm_registry import NPM_LOCK_ONLY

FULLSTACK = PROJECT_ROOT / "examples" / "fullstack"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
FAILING = """import { describe, expect, it } from "vitest";

describe("maths", () => {
  it("adds wrong", () => {
    expect(1 + 1).toBe(3);
  });
  it.skip("is skipped", () => {});
});
"""


@pytest.fixture
def node_settings(settings: Settings) -> Settings:
    return settings.with_(build_ca_bundle=CA_BUNDLE)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FULLSTACK, tmp_path / "fullstack",
                                ignore=shutil.ignore_patterns("node_modules", "dist", "coverage", "__pycache__")))


def ctx_for(repo: Path, settings: Settings, redis: Redis, run: Run | None = None) -> AgentContext:
    run = run or Run(requested_by="U0DEV", repo=str(repo), env="staging", services=["web"])
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="test")


def write_config(repo: Path, testing: str) -> None:
    config = repo / "devops_orchestra.yaml"
    text = config.read_text()
    start, end = text.index("testing:"), text.index("deployment:")
    config.write_text(text[:start] + testing + "\n" + text[end:])


def test_the_web_service_runs_its_vitest_suite_with_coverage(repo: Path, node_settings: Settings,
                                                              redis: Redis) -> None:
    result = run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert (result.ran, result.runner, result.passed, result.failed, result.errors) == (True, "vitest", 9, 0, 0)
    assert result.coverage is not None and 50 < result.coverage <= 100
    assert not (repo / "web" / "node_modules").exists() and not (repo / "web" / "coverage").exists()


def test_a_failing_vitest_test_fails_the_gate_with_its_name_file_and_line(repo: Path, node_settings: Settings,
                                                                          redis: Redis) -> None:
    (repo / "web" / "tests" / "maths.test.js").write_text(FAILING)
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@x",
                                                             "commit", "-qm", "fullstack"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    run = RunStore(redis).create(Run(kind="validate", source="cli", requested_by="cli:test", repo=str(repo),
                                     ref=sha, commit=sha, services=["web"]))
    execute_stage(run.id, TEST, test_agent.run, redis=redis, settings=node_settings)
    event = next(e for e in EventBus(redis).replay(run.id) if e.type == EventType.TEST_RESULTS)
    web = event.data["services"]["web"]
    assert event.data["passed"] is False
    assert (web["passed"], web["failed"], web["skipped"], web["runner"]) == (9, 1, 1, "vitest")
    assert web["failures"] == [{"test": "maths > adds wrong", "file": "tests/maths.test.js", "line": 5,
                                "message": "AssertionError: expected 2 to be 3 // Object.is equality"}]
    assert "maths > adds wrong (tests/maths.test.js:5)" in event.data["summary"]
    assert event.data["coverage"] == web["coverage"] and web["coverage"] > 0


def test_coverage_is_the_json_summarys_line_figure(repo: Path, node_settings: Settings, redis: Redis,
                                                   tmp_path: Path) -> None:
    ctx = ctx_for(repo, node_settings, redis)
    result = run_service_tests(ctx, "web")
    summary = json.loads((node_settings.run_dir(ctx.run.id) / "reports" / "web" / "coverage" /
                          "coverage-summary.json").read_text())
    assert result.coverage == round(summary["total"]["lines"]["pct"], 1)
    assert summary["total"]["lines"]["covered"] < summary["total"]["lines"]["total"]  # a real, partial figure


def test_a_test_file_that_does_not_load_is_an_error_naming_it(repo: Path, node_settings: Settings,
                                                               redis: Redis) -> None:
    (repo / "web" / "tests" / "broken.test.js").write_text('import { it } from "vitest";\nimport "./gone.js";\n'
                                                           'it("never runs", () => {});\n')
    result = run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert (result.passed, result.errors) == (9, 1) and not result.ok
    assert result.failures[0].file == "tests/broken.test.js" and "gone.js" in result.failures[0].message


def test_an_error_after_the_tests_pass_still_fails_the_service(repo: Path, node_settings: Settings,
                                                                redis: Redis) -> None:
    """Every test passes, yet Vitest exits 1 for an unhandled error: the exit status is not ignored."""
    (repo / "web" / "tests" / "late.test.js").write_text(
        'import { it } from "vitest";\nit("passes", () => { setTimeout(() => { throw new Error("late"); }); });\n')
    result = run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert result.failed == 0 and result.errors == 1 and not result.ok
    assert result.failures[0].test == "(run)" and "vitest exited with 1" in result.failures[0].message


def test_testing_command_acts_when_it_is_an_npm_command(repo: Path, node_settings: Settings, redis: Redis) -> None:
    write_config(repo, "testing:\n  command: npx vitest run tests/Books.test.jsx\n")
    result = run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert (result.passed, result.failed) == (3, 0)  # only Books.test.jsx's three
    assert result.coverage is not None


@pytest.mark.parametrize("testing, error", [
    ("testing:\n  command: make test\n", "testing.command `make test` does not run the Node service web"),
    ("testing:\n  framework: mocha\n", "testing.framework `mocha` does not run the Node service web"),
    ("testing:\n  framework: jest\n", "declares neither vitest nor jest (or not the one"),
])
def test_a_testing_section_that_cannot_act_on_a_node_service_is_refused(
        repo: Path, node_settings: Settings, redis: Redis, testing: str, error: str) -> None:
    write_config(repo, testing)
    with pytest.raises(OrchestraError, match=error.replace("(", r"\(")) as refused:
        run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert refused.value.hint


def test_without_a_lock_file_npm_ci_is_refused_with_the_fix(repo: Path, node_settings: Settings,
                                                             redis: Redis) -> None:
    (repo / "web" / "package-lock.json").unlink()
    with pytest.raises(OrchestraError, match="no package-lock.json") as refused:
        run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert "commit package-lock.json" in str(refused.value.hint)


def test_a_lock_file_that_disagrees_with_package_json_fails_npm_ci(repo: Path, node_settings: Settings,
                                                                    redis: Redis) -> None:
    manifest = json.loads((repo / "web" / "package.json").read_text())
    manifest["devDependencies"]["left-pad"] = "1.3.0"
    (repo / "web" / "package.json").write_text(json.dumps(manifest))
    with pytest.raises(OrchestraError, match="npm ci failed for web"):
        run_service_tests(ctx_for(repo, node_settings, redis), "web")


def test_a_package_without_a_test_script_has_no_tests(repo: Path, node_settings: Settings, redis: Redis) -> None:
    manifest = json.loads((repo / "web" / "package.json").read_text())
    manifest["scripts"]["test"] = 'echo "Error: no test specified" && exit 1'
    (repo / "web" / "package.json").write_text(json.dumps(manifest))
    result = run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert not result.ran and result.note == "no test script in package.json"


def test_dependencies_are_installed_once_per_lock_file(repo: Path, node_settings: Settings, redis: Redis) -> None:
    first = node.ensure_modules(repo / "web", node_settings)
    stamp = (first / "node_modules").stat().st_mtime_ns
    started = time.monotonic()
    assert node.ensure_modules(repo / "web", node_settings) == first
    assert time.monotonic() - started < 1 and (first / "node_modules").stat().st_mtime_ns == stamp
    assert (node_settings.cache / "npm" / "_cacache").is_dir()  # npm's downloads, for the next lock file


def test_on_a_new_worker_without_node_the_stage_says_what_to_install(repo: Path, node_settings: Settings,
                                                                     redis: Redis, tmp_path: Path) -> None:
    bare = node_settings.with_(cache_dir=tmp_path / "new-worker" / "cache", tool_env={"PATH": str(tmp_path)})
    with pytest.raises(OrchestraError, match="node is not installed on this worker") as refused:
        run_service_tests(ctx_for(repo, bare, redis), "web")
    assert "apt-get install nodejs npm" in str(refused.value.hint)
    with_node = bare.with_(tool_env=node_settings.tool_env, cache_dir=tmp_path / "other-worker" / "cache")
    assert (node.ensure_modules(repo / "web", with_node) / "node_modules" / "vitest").is_dir()


def test_jest_reports_are_read_too(tmp_path: Path, node_settings: Settings, redis: Redis) -> None:
    repo = tmp_path / "jestrepo"
    (repo / "svc" / "tests").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text("project:\n  name: jestrepo\n  language: node\n"
                                                "deployment:\n  services:\n    - name: svc\n      path: svc\n")
    (repo / "svc" / "package.json").write_text(json.dumps({
        "name": "svc", "version": "1.0.0", "private": True, "main": "sum.js",
        "scripts": {"test": "jest"}, "devDependencies": {"jest": "29.7.0"}}))
    (repo / "svc" / "sum.js").write_text("exports.sum = (a, b) => a + b;\nexports.unused = (x) => {\n"
                                         "  const y = x * 2;\n  return y;\n};\n")
    (repo / "svc" / "tests" / "sum.test.js").write_text(
        "const { sum } = require('../sum');\ntest('adds', () => { expect(sum(1, 2)).toBe(3); });\n"
        "describe('sum', () => {\n  test('adds wrong', () => { expect(sum(1, 1)).toBe(3); });\n});\n")
    install = node.run_tool(NPM_LOCK_ONLY,
                            cwd=repo / "svc", settings=node_settings, timeout=300,
                            extra_env={"npm_config_cache": str(node_settings.cache / "npm"),
                                       "NPM_CONFIG_CAFILE": str(CA_BUNDLE)})
    assert install.returncode == 0, install.stderr
    result = run_service_tests(ctx_for(repo, node_settings, redis, Run(requested_by="U0DEV", repo=str(repo))),
                               "svc")
    assert (result.runner, result.passed, result.failed) == ("jest", 1, 1)
    assert [(f.test, f.file, f.line) for f in result.failures] == [("sum > adds wrong", "tests/sum.test.js", 4)]
    assert result.coverage == 50.0  # sum.js: the two exports ran, unused's two body lines did not


# In the box -------------------------------------------------------------------------------------------------

HOSTILE = """import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { expect, it } from "vitest";

it("sees no credentials", () => {
  const names = Object.keys(process.env).filter((k) => /REDIS|TOKEN|SECRET|KEY|PASSWORD/.test(k));
  expect(names).toEqual([]);
});

it("cannot change the shared node_modules", () => {
  expect(() => fs.writeFileSync(path.resolve("../node_modules/poison.js"), "x")).toThrow(/EROFS/);
});

it("writes beside the shared node_modules (into its own throwaway layer)", () => {
  fs.writeFileSync(path.resolve("../package.json"), "{}");
});

it("cannot reach a listener on the host's loopback", async () => {
  const reached = await new Promise((resolve) => {
    const sock = net.connect(LISTENER_PORT, "127.0.0.1", () => { sock.destroy(); resolve(true); });
    sock.on("error", () => resolve(false));
  });
  expect(reached).toBe(false);
});
"""


@pytest.fixture
def boxed(node_settings: Settings, docker_env: DockerEnv) -> Settings:
    docker_env.node_image()
    return node_settings.with_(sandbox="docker", docker_host=docker_env.url, base_image=docker_env.base_image)


@pytest.mark.docker
def test_in_the_box_the_suite_runs_and_hostile_tests_find_nothing(
        repo: Path, boxed: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-0000-worker-token")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    (repo / "web" / "tests" / "hostile.test.js").write_text(
        HOSTILE.replace("LISTENER_PORT", str(listener.getsockname()[1])))
    try:
        result = run_service_tests(ctx_for(repo, boxed, redis), "web")
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert (result.passed, result.failed, result.errors) == (13, 0, 0), result.failures
    assert result.coverage is not None and result.coverage > 50
    modules = node.ensure_modules(repo / "web", boxed)
    assert modules.name.startswith("box-") and not (modules / "node_modules" / "poison.js").exists()
    assert json.loads((modules / "package.json").read_text())["name"] == "fullstack-web"
    assert not [p for p in modules.iterdir() if p.name.startswith("run-")]  # the run's copy is gone


@pytest.mark.docker
def test_in_the_box_a_failing_test_is_named_and_a_hung_one_is_stopped(repo: Path, boxed: Settings,
                                                                      redis: Redis) -> None:
    (repo / "web" / "tests" / "maths.test.js").write_text(FAILING)
    result = run_service_tests(ctx_for(repo, boxed, redis), "web")
    assert [(f.test, f.file, f.line) for f in result.failures] == [("maths > adds wrong", "tests/maths.test.js", 5)]
    (repo / "web" / "tests" / "hang.test.js").write_text(
        'import { it } from "vitest";\nit("hangs", () => new Promise(() => {}), 600_000);\n')
    write_config(repo, "testing:\n  timeout: 20s\n")
    started = time.monotonic()
    with pytest.raises(OrchestraError, match="did not finish within 20s in the sandbox"):
        run_service_tests(ctx_for(repo, boxed, redis), "web")
    assert time.monotonic() - started < 40


@pytest.mark.docker
def test_without_the_node_image_the_box_refuses_instead_of_running_on_the_host(
        repo: Path, boxed: Settings, redis: Redis, tmp_path: Path) -> None:
    missing = boxed.with_(node_base_image="orchestra-node:missing", cache_dir=tmp_path / "fresh-cache")
    with pytest.raises(OrchestraError, match="orchestra-node:missing is not in the Docker engine") as refused:
        run_service_tests(ctx_for(repo, missing, redis), "web")
    assert "scripts/build-node-base-image" in str(refused.value.hint)
    assert not (tmp_path / "fresh-cache" / "node-modules").exists()


def test_the_same_attacks_succeed_without_the_sandbox(repo: Path, node_settings: Settings, redis: Redis) -> None:
    """The hostile tests are real: on this host they reach the listener and write into the shared install."""
    listener = socket.create_server(("127.0.0.1", 0))
    (repo / "web" / "tests" / "hostile.test.js").write_text(
        HOSTILE.replace("LISTENER_PORT", str(listener.getsockname()[1])))
    try:
        result = run_service_tests(ctx_for(repo, node_settings, redis), "web")
    finally:
        listener.close()
        (node.ensure_modules(repo / "web", node_settings) / "node_modules" / "poison.js").unlink(missing_ok=True)
    assert {f.test for f in result.failures} == {"cannot change the shared node_modules",
                                                 "cannot reach a listener on the host's loopback"}
