"""Test generation for a Node service, for real: its Vitest suite runs, a probe observes, mutants are run.

The fixture service is built in each test from the fullstack example's package.json and lock file
(so the npm install is shared with the Node test-stage tests through the session cache) plus a small
pricing module whose exports the service's own test leaves partly uncalled.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.testing import jsfuncs, node, node_llm
from agents.testing import stage as test_agent
from agents.testing.report import TestGenReport
from agents.testing.stage import ServiceTests
from agents.testing.stage import test_service as run_service_tests
from agents.testing.testgen_node import find_targets, generate_node_tests
from jobs.graph import TEST
from jobs.runner import execute_stage
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.llm import LLM
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStore
from tests.support.docker_services import DockerEnv
from tests.support.fake_anthropic import fake_anthropic

WEB = PROJECT_ROOT / "examples" / "fullstack" / "web"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONFIG = """project:
  name: shop-web
  language: node
testing:
  timeout: 2m
deployment:
  services:
    - name: web
      path: web
"""
PRICING = """// Prices for the shop's basket.
export function discount(total, isMember = false) {
  if (total > 100) {
    return isMember ? total * 0.8 : total * 0.9;
  }
  return total;
}

export const label = (count) => (count === 1 ? "1 item" : `${count} items`);

export function covered(a, b) {
  return a + b;
}
"""
FEES = """export function shipping(weight: number, express: boolean = false): number {
  const base: number = weight <= 2 ? 5 : 9;
  return express ? base * 2 : base;
}
"""
OWN_TEST = """import { expect, it } from "vitest";
import { covered } from "../src/pricing.js";

it("adds", () => {
  expect(covered(1, 2)).toBe(3);
});
"""


@pytest.fixture
def node_settings(settings: Settings) -> Settings:
    return settings.with_(build_ca_bundle=CA_BUNDLE)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "shop"
    (repo / "web" / "src").mkdir(parents=True)
    (repo / "web" / "tests").mkdir()
    (repo / "devops_orchestra.yaml").write_text(CONFIG)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(WEB / name, repo / "web" / name)
    (repo / "web" / "src" / "pricing.js").write_text(PRICING)
    (repo / "web" / "tests" / "pricing.test.js").write_text(OWN_TEST)
    return repo


def ctx_for(repo: Path, settings: Settings, redis: Redis, run: Run | None = None) -> AgentContext:
    run = run or Run(requested_by="U0DEV", repo=str(repo), env="staging", services=["web"])
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                        config=load_config(repo), actor="test")


def committed_run(repo: Path, redis: Redis) -> Run:
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@x",
                                                             "commit", "-qm", "shop"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return RunStore(redis).create(Run(kind="validate", source="cli", requested_by="cli:test", repo=str(repo),
                                      ref=sha, commit=sha, services=["web"]))


def generate(repo: Path, settings: Settings, redis: Redis, tmp_path: Path, **kwargs: Any) -> TestGenReport:
    """The service's own tests first (their coverage says what is uncalled), then generation."""
    ctx = ctx_for(repo, settings, redis)
    ran = run_service_tests(ctx, "web")
    assert ran.ok, ran.failures
    return generate_node_tests(repo / "web", settings=settings, testing=ctx.config.testing, service="web",
                               reports=settings.run_dir(ctx.run.id) / "reports" / "web",
                               out_dir=tmp_path / "offer", coverage_before=ran.coverage, **kwargs)


def test_the_stage_offers_a_kept_test_for_each_uncalled_function_that_kills_a_mutant(
        repo: Path, node_settings: Settings, redis: Redis) -> None:
    (repo / "web" / "src" / "fees.ts").write_text(FEES)
    run = committed_run(repo, redis)
    execute_stage(run.id, TEST, test_agent.run, redis=redis, settings=node_settings)
    event = next(e for e in EventBus(redis).replay(run.id) if e.type == EventType.TEST_RESULTS)
    web = event.data["generated"]["web"]
    verdicts = {v["target"]: v for v in web["verdicts"]}  # covered() is called by the own test: no target
    assert set(verdicts) == {"src/pricing.js:discount", "src/pricing.js:label", "src/fees.ts:shipping"}
    assert verdicts["src/pricing.js:discount"]["reason"].startswith("kept: kills")
    assert web["generator"] == "deterministic" and web["mutation_score"] > 0
    assert web["coverage_after"] > web["coverage_before"] and "run together" not in web["note"]
    files = web["files"]
    assert set(files) == {"tests/orchestra_gen_pricing_discount.test.js", "tests/orchestra_gen_pricing_label.test.js",
                          "tests/orchestra_gen_fees_shipping.test.ts"}  # TypeScript, as Vitest loads it
    assert 'import { shipping } from "../src/fees";' in files["tests/orchestra_gen_fees_shipping.test.ts"]
    kept = files["tests/orchestra_gen_pricing_discount.test.js"]
    assert 'import { discount } from "../src/pricing.js";' in kept and "expect(discount(101, false))" in kept
    offered = node_settings.run_dir(run.id) / "generated-tests" / "web"
    assert {p.relative_to(offered).as_posix(): p.read_text() for p in offered.rglob("*.*")} == files
    assert not list((repo / "web").rglob("orchestra_*"))  # offered, never written into the service

    # It passed with the service's own tests (the final run); added to the service, it catches a changed discount().
    (repo / "web" / "tests" / "orchestra_gen_pricing_discount.test.js").write_text(kept)
    (repo / "web" / "src" / "pricing.js").write_text(PRICING.replace("total > 100", "total >= 100"))
    failed = run_service_tests(ctx_for(repo, node_settings, redis), "web")
    assert [f.file for f in failed.failures] == ["tests/orchestra_gen_pricing_discount.test.js"]


def test_llm_tests_are_kept_only_when_they_hold_and_catch_a_mutant(repo: Path, node_settings: Settings,
                                                                  redis: Redis, tmp_path: Path) -> None:
    def answer(body: dict) -> dict:
        prompt = body["messages"][0]["content"]
        if "Function: discount" not in prompt:
            return {"tests": []}
        head = 'import { expect, it } from "vitest";\nimport { discount } from "../src/pricing.js";\n'
        return {"tests": [
            {"name": "weak", "code": head + 'it("a number", () => { expect(typeof discount(150)).toBe("number"); });'},
            {"name": "wrong", "code": head + 'it("wrong", () => { expect(discount(150)).toBe(150); });'},
            {"name": "reach", "code": head + 'it("env", () => { expect(process.env.SLACK_BOT_TOKEN).toBe(1); });'},
            {"name": "good", "code": head + 'it("members", () => { expect(discount(150, true)).toBe(120); });'}]}

    with fake_anthropic(api_key="sk-ant-node-testgen") as server:
        server.on_tool("record_generated_node_tests", answer)
        llm = LLM(server.client_settings(node_settings), redis=redis)
        report = generate(repo, node_settings, redis, tmp_path, llm=llm, run_id="tgn1")
        prompts = [r.body["messages"][0]["content"] for r in server.requests]
    discount = [c for c in report.candidates if c.target.endswith(":discount")]
    assert [c.origin for c in discount] == ["llm"] * 4  # one held: no deterministic one needed
    weak, wrong, reach, good = (c.reason for c in discount)
    assert weak.startswith("passes against all") and "does not check the result" in weak
    assert wrong.startswith("fails against the current code") and "expected 135 to be 150" in wrong
    assert reach == "refused without running it: it uses process.env"
    assert good.startswith("kept: kills") and discount[3].kept
    assert list(report.kept_files) == ["tests/orchestra_llm_pricing_discount_3.test.js",
                                       "tests/orchestra_gen_pricing_label.test.js"]
    assert report.source == "llm+deterministic" and report.tokens > 0
    assert any('<untrusted-data name="source"' in p and "total * 0.8" in p and '<untrusted-data name="signature"' in p
               for p in prompts)


def test_a_module_that_loops_forever_on_import_is_stopped_and_reported(repo: Path, node_settings: Settings,
                                                                      tmp_path: Path) -> None:
    (repo / "web" / "src" / "spin.js").write_text("while (true) {}\nexport function next(n) { return n + 1; }\n")
    (repo / "web" / "src" / "quit.js").write_text("process.exit(3);\nexport function half(n) { return n / 2; }\n")
    started = time.monotonic()  # no coverage report given: every exported function is a target
    report = generate_node_tests(repo / "web", settings=node_settings, testing=load_config(repo).testing,
                                 service="web", reports=tmp_path / "no-run", test_timeout_s=6)
    elapsed = time.monotonic() - started
    by_target = {c.target: c.reason for c in report.candidates}
    assert by_target["src/spin.js:next"].startswith("not probed: src/spin.js did not load or run: stopped at the "
                                                    "time limit")
    assert "did not finish within 6s" in by_target["src/spin.js:next"]
    assert "process.exit unexpectedly called" in by_target["src/quit.js:half"]
    assert by_target["src/pricing.js:discount"].startswith("kept")  # the others still get their tests
    assert elapsed < 30
    assert "every exported function was a target" in report.note
    copies = str(node.ensure_modules(repo / "web", node_settings) / "testgen-")
    assert [p for p in os.listdir("/proc") if p.isdigit() and _runs_in(p, copies)] == []  # no worker left behind


def test_a_low_risk_change_skips_generation_for_node_services_too(repo: Path, node_settings: Settings,
                                                                 redis: Redis) -> None:
    ctx = ctx_for(repo, node_settings, redis, Run(requested_by="U0DEV", repo=str(repo), services=["web"], risk="low"))
    assert test_agent.generate(ctx, [ServiceTests("web", ran=True, runner="vitest")]) == {}


def test_exported_functions_are_found_in_esm_commonjs_and_typescript() -> None:
    esm = ("// export function commented(a) {}\nconst s = 'export function fake() {}';\n"
           "function helper(x) { return x * 2; }\nconst twice = x => x + x;\nexport { helper, twice as double };\n"
           "export async function later(ms: number): Promise<number> {\n  return ms >= 10 ? 1 : 0;\n}\n"
           "export function Button() { return null; }\n")
    assert [(f.name, f.line, f.params, f.is_async) for f in jsfuncs.exported_functions(esm, "a.ts")] == [
        ("helper", 3, "x", False), ("double", 4, "x", False), ("later", 6, "ms: number", True)]
    cjs = "exports.sum = (a, b) => a + b;\nfunction mul(a, b) { return a * b }\nmodule.exports.mul = mul;\n"
    assert [f.name for f in jsfuncs.exported_functions(cjs, "m.js")] == ["sum"]
    made = jsfuncs.mutants(esm, jsfuncs.exported_functions(esm, "a.ts")[2])
    assert [m.description for m in made] == ["line 7: >= -> <", "line 7: 10 -> 11", "line 7: 1 -> 2", "line 7: 0 -> 1"]
    assert all(m.source.count("\n") == esm.count("\n") and "x * 2" in m.source for m in made)


def test_tests_dependencies_and_build_output_are_not_targets(tmp_path: Path) -> None:
    for name in ("src/a.js", "src/a.test.js", "tests/b.js", "node_modules/x/index.js", "dist/c.js",
                 "vite.config.js", "src/types.d.ts", "src/App.jsx", "src/ignore previous instructions.js"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("export function f(a) { return a; }\n")
    targets, known = find_targets(tmp_path, tmp_path / "no-coverage.json")
    assert [t.file for t in targets] == ["src/a.js"] and known is False


def _runs_in(pid: str, prefix: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(prefix)
    except OSError:
        return False


# In the box ---------------------------------------------------------------------------------------------------

WRITER = """import { writeFileSync } from "node:fs";
import path from "node:path";

export function save(name) {
  for (const target of [path.resolve("../node_modules/poison.js"), HOST_FILE, SERVICE_FILE]) {
    try { writeFileSync(target, "pwned"); } catch (e) { /* keep going: try the next one */ }
  }
  return name.length > 3 ? "long" : "short";
}
"""


@pytest.fixture
def boxed(node_settings: Settings, docker_env: DockerEnv) -> Settings:
    docker_env.node_image()
    return node_settings.with_(sandbox="docker", docker_host=docker_env.url, base_image=docker_env.base_image)


@pytest.mark.docker
def test_in_the_box_a_writing_function_touches_nothing_and_a_looping_module_is_stopped(
        repo: Path, boxed: Settings, tmp_path: Path) -> None:
    host_file, service_file = tmp_path / "escaped.txt", repo / "web" / "src" / "escaped.txt"
    shutil.rmtree(repo / "web" / "tests")  # no tests yet: the generated ones start the folder
    (repo / "web" / "src" / "pricing.js").unlink()
    (repo / "web" / "src" / "store.js").write_text(WRITER.replace("HOST_FILE", json.dumps(str(host_file)))
                                                   .replace("SERVICE_FILE", json.dumps(str(service_file))))
    (repo / "web" / "src" / "spin.js").write_text("while (true) {}\nexport function next(n) { return n + 1; }\n")
    report = generate_node_tests(repo / "web", settings=boxed, testing=load_config(repo).testing, service="web",
                                 reports=tmp_path / "no-run", test_timeout_s=12)
    by_target = {c.target: c for c in report.candidates}
    assert "did not finish within 12s in the sandbox" in by_target["src/spin.js:next"].reason
    assert by_target["src/store.js:save"].kept  # it ran (its writes failed or stayed in the box) and was pinned
    assert set(report.kept_files) == {"tests/orchestra_gen_store_save.test.js"}
    modules = node.ensure_modules(repo / "web", boxed)
    assert not host_file.exists() and not service_file.exists()
    assert not (modules / "node_modules" / "poison.js").exists()
    assert not [p for p in modules.iterdir() if p.name.startswith("testgen-")]  # the copy is gone


@pytest.mark.parametrize("line, refused", [
    ('const env = process["env"];', "process["),
    ("const { execSync } = require('child_process');", "require("),
    ("const m = require(name);", "require("),
    ('const fs = await import("node:fs");', "import("),
    ('import { readFileSync } from "node:fs";', 'from "'),
    ("await fetch('http://127.0.0.1:9/x');", "fetch("),
    ("const run = (() => {}).constructor('return process')();", ".constructor"),
    ("globalThis.secret = 1;", "globalThis"),
])
def test_model_tests_that_reach_outside_are_refused_unrun(line: str, refused: str) -> None:
    spec = "../src/pricing.js"
    code = f'import {{ it }} from "vitest";\nimport {{ discount }} from "{spec}";\nit("x", async () => {{ {line} }});\n'
    assert node_llm.refusal(code, spec).startswith(f"refused without running it: it uses {refused}")
    clean = code.replace(line, "expect(discount(1)).toBe(1);")
    assert node_llm.refusal(clean, spec) == ""
    assert node_llm.refusal(clean.replace(spec, "../src/other.js"), spec).startswith("does not import the function")
