"""Flaky tests told apart from broken ones, with real pytest runs in the sandbox.

The flaky test counts its own runs in a file beside its JUnit report (the one folder the box lets a
test run write): it fails on the first run of each stage run and passes on the next two, so the
stage's own re-runs are what show it to be flaky. Each stage run is the runner's (`execute_stage`), so
the test_results event and the thread's line are the ones a real run publishes.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.testing import flaky_record, sandbox
from agents.testing import stage as testing_agent
from agents.testing.venvs import ensure_venv
from bot.slack.texts import render
from bot.slack.views import milestone
from handlers.intake import handle
from handlers.reply import ReplyKind, Who
from jobs.graph import TEST
from jobs.runner import execute_stage
from orchestra.config import load_config
from orchestra.errors import ConfigError
from orchestra.events import Event, EventBus, EventType
from orchestra.parse import parse
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.docker_services import DockerEnv
from tests.support.files import write_files
from tests.support.sample_apps import git

ALICE = Who("U0ALICE", place="C0DEPLOYS", via="command")
ONE_IN_THREE = '''\
from pathlib import Path


def _run_number(request, name):
    counter = Path(request.config.option.xmlpath).parent / f"{name}.count"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    return n
'''
PAY_TESTS = ONE_IN_THREE + '''

def test_charge():
    assert 2 + 2 == 4


def test_retry(request):
    assert _run_number(request, "retry") % 3 != 1, "the payment gateway timed out"
'''
HOSTILE_ID = "<!channel> $(touch {sentinel}) `id`; rm -rf ~ | x"
BROKEN_TESTS = ONE_IN_THREE + '''
import pytest


def test_refund():
    assert 1 == 2, "refunds are broken"


def test_quarantined():
    assert False, "known bad, quarantined"


@pytest.mark.parametrize("case", [1], ids=[{hostile!r}])
def test_hostile(request, case):
    assert _run_number(request, "hostile") % 3 != 1
'''


def pay_repo(root: Path, testing: str, tests: str) -> Path:
    write_files(root, {
        "devops_orchestra.yaml": f"project:\n  name: pay\n  language: python\ntesting:\n{testing}deployment:\n"
                                 "  services:\n    - name: payments\n      path: payments\n",
        "payments/requirements.txt": "",
        "payments/app.py": "def charge(amount):\n    return amount\n",
        "payments/tests/test_pay.py": tests,
        "payments/conftest.py": "import os, sys\nsys.path.insert(0, os.path.dirname(__file__))\n",
    })
    git(root, "init", "-q", "-b", "main")
    for key, value in (("user.name", "Dev"), ("user.email", "dev@example.com"), ("commit.gpgsign", "false")):
        git(root, "config", key, value)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "payments")
    return root


def new_run(repo: Path, redis: Redis) -> Run:
    return RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(repo), ref="main", env="staging",
                                      services=["payments"], risk="low"))


def stage_run(repo: Path, settings: Settings, redis: Redis, run: Run | None = None) -> tuple[Run, Event]:
    """The test stage of a run, as the runner runs it; the run and its test_results event."""
    run = run or new_run(repo, redis)
    execute_stage(run.id, TEST, testing_agent.run, redis=redis, settings=settings)
    [event] = [e for e in EventBus(redis).replay(run.id) if e.type == EventType.TEST_RESULTS]
    return run, event


@pytest.fixture
def boxed(settings: Settings, docker_env: DockerEnv) -> Settings:
    return settings.with_(sandbox="docker", docker_host=docker_env.url, base_image=docker_env.base_image)


@pytest.mark.docker
def test_a_test_failing_one_time_in_three_is_flaky_does_not_block_and_is_recorded_across_runs(
        boxed: Settings, redis: Redis, tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", "  reruns: 2\n", PAY_TESTS)
    first, event = stage_run(repo, boxed, redis)
    assert sandbox.is_sandboxed(ensure_venv(repo / "payments", boxed))  # its runs were in the box

    data = event.data
    assert data["passed"] is True, data["summary"]
    [decision] = data["services"]["payments"]["decisions"]
    assert (decision["test"], decision["verdict"], decision["blocking"]) == ("tests/test_pay.py::test_retry",
                                                                             "flaky", False)
    assert (decision["runs"], decision["failures"], decision["file"], decision["line"]) == (
        3, 1, "tests/test_pay.py", 15)
    attempts = decision["attempts"]
    assert [(a["mode"], a["outcome"]) for a in attempts] == [("suite", "failed"), ("alone", "passed"),
                                                             ("alone", "passed")]
    assert attempts[0]["position"] == "2 of 2" and all(a["seconds"] is not None for a in attempts)
    assert data["counts"]["flaky"] == 1 and data["services"]["payments"]["failures"] == []
    line = milestone(event)
    assert line is not None and line.startswith(":white_check_mark: Tests: 1 passed")
    assert "1 flaky test (failed 1 of 3 runs), not blocking: tests/test_pay.py::test_retry" in line

    second, _ = stage_run(repo, boxed, redis)
    [record] = flaky_record.records(redis, "pay", "payments")
    assert (record.test, record.runs, record.failures, record.flaky, record.last_run) == (
        "tests/test_pay.py::test_retry", 6, 2, 2, second.id)
    assert record.last_seen is not None and time.time() - record.last_seen < 120

    reply = handle(parse("/orchestra flaky payments", ["payments"]), ALICE, redis=redis,
                   settings=boxed.with_(repos=(str(repo),)))
    assert reply.kind == ReplyKind.ANSWER, reply.text
    assert reply.text.splitlines()[0] == "Flaky tests of payments (1):"
    assert "tests/test_pay.py::test_retry: failed 2 of 6 runs (33%), judged flaky in 2 run(s); last failed" \
        in reply.text and second.id in reply.text

    why = handle(parse("why was that test ignored?", ["payments"]), ALICE, redis=redis, settings=boxed)
    assert why.kind == ReplyKind.ANSWER and why.text.startswith(f"Run {second.id} (payments to staging"), why.text
    assert "• tests/test_pay.py::test_retry (payments): flaky, failed 1 of 3 runs (failed in the suite (" in why.text
    assert "passed alone" in why.text and "testing.flaky_blocks is off" in why.text


@pytest.mark.docker
def test_a_broken_test_blocks_a_quarantined_one_does_not_and_a_hostile_id_stays_text(
        boxed: Settings, redis: Redis, tmp_path: Path) -> None:
    repo = tmp_path / "pay"
    run = new_run(repo, redis)
    sentinel = boxed.run_dir(run.id) / "reports" / "payments" / "pwned"  # where the box may write
    tests = BROKEN_TESTS.replace("{hostile!r}", repr(HOSTILE_ID.format(sentinel=sentinel)))
    pay_repo(repo, "  quarantine:\n    - tests/test_pay.py::test_quarantined\n", tests)
    _, event = stage_run(repo, boxed, redis, run)

    data = event.data
    assert data["passed"] is False
    by_test = {d["test"].rpartition("::")[2]: d for d in data["services"]["payments"]["decisions"]}
    refund, quarantined = by_test["test_refund"], by_test["test_quarantined"]
    assert (refund["verdict"], refund["blocking"], refund["runs"], refund["failures"]) == ("broken", True, 3, 3)
    assert (quarantined["verdict"], quarantined["blocking"], quarantined["reason"]) == (
        "quarantined", False, "quarantined: failed, not blocking")
    assert data["summary"].startswith("1 test(s) failed; first: tests.test_pay::test_refund (tests/test_pay.py:")
    assert "1 quarantined test failed, not blocking: tests/test_pay.py::test_quarantined" in data["summary"]
    [blocking] = data["services"]["payments"]["failures"]
    assert blocking["test"].endswith("test_refund") and blocking["line"] == 13

    hostile = next(d for name, d in by_test.items() if name.startswith("test_hostile["))
    assert hostile["test"] == f"tests/test_pay.py::test_hostile[{HOSTILE_ID.format(sentinel=sentinel)}]"
    assert (hostile["verdict"], [a["outcome"] for a in hostile["attempts"]]) == ("flaky", ["failed", "passed",
                                                                                         "passed"])
    assert not sentinel.exists()  # the id reached pytest as one argument, never a shell
    line = milestone(event)
    assert line is not None and "<!channel>" not in line and "&lt;!channel&gt; $(touch" in line
    why = handle(parse("why did the quarantined test not block?", ["payments"]), ALICE, redis=redis, settings=boxed)
    assert "tests/test_pay.py::test_quarantined (payments): quarantined, failed 1 of 1 runs" in why.text
    assert "it is in testing.quarantine" in why.text and "test_refund" not in why.text  # it blocked
    reply = handle(parse("/orchestra flaky payments", ["payments"]), ALICE, redis=redis,
                   settings=boxed.with_(repos=(str(repo),)))
    assert "test_hostile[&lt;!channel&gt; $(touch" in render(reply) and "<!channel>" not in render(reply)


@pytest.mark.docker
def test_flaky_blocks_makes_a_flaky_test_fail_the_gate(boxed: Settings, redis: Redis, tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", "  flaky_blocks: true\n  reruns: 1\n", PAY_TESTS)
    _, event = stage_run(repo, boxed, redis)
    assert event.data["passed"] is False
    [decision] = event.data["services"]["payments"]["decisions"]
    assert (decision["verdict"], decision["blocking"], decision["runs"]) == ("flaky", True, 2)
    assert "1 flaky test (failed 1 of 2 runs), blocking (testing.flaky_blocks)" in event.data["summary"]


def test_reruns_zero_keeps_a_failing_test_broken_on_the_host(settings: Settings, redis: Redis,
                                                             tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", "  reruns: 0\n", PAY_TESTS)
    _, event = stage_run(repo, settings, redis)
    assert "payments" in event.data.get("services", {}), event.data
    [decision] = event.data["services"]["payments"]["decisions"]
    assert event.data["passed"] is False
    assert (decision["verdict"], decision["runs"], decision["reason"]) == (
        "broken", 1, "failed; not re-run (testing.reruns is 0)")


def test_re_runs_stay_within_testing_timeout_with_the_suite(settings: Settings, redis: Redis,
                                                             tmp_path: Path) -> None:
    slow = "import time\n\n\ndef test_slow_and_failing():\n    time.sleep(1.5)\n    assert False\n"
    repo = pay_repo(tmp_path / "pay", "  timeout: 3s\n  reruns: 10\n", slow)
    started = time.monotonic()
    _, event = stage_run(repo, settings, redis)
    elapsed = time.monotonic() - started
    [decision] = event.data["services"]["payments"]["decisions"]
    assert (decision["verdict"], decision["blocking"]) == ("broken", True)
    assert decision["runs"] < 4 and "testing.timeout was spent" in decision["reason"], decision
    assert elapsed < 8, elapsed  # 3 s for the suite and its re-runs, then the coverage report


@pytest.mark.parametrize("testing, refusal", [
    ("  reruns: 11\n", "yaml:5: testing.reruns: must be at most 10"),
    ("  reruns: two\n", "testing.reruns: must be a whole number"),
    ("  flaky_blocks: sometimes\n", "testing.flaky_blocks: must be true or false"),
    ("  quarantine: tests/test_pay.py::test_retry\n", "testing.quarantine: must be a list"),
    ("  quarantine:\n    - test_retry\n", "`test_retry` is not a test id"),
    ("  quarantine:\n    - a.py::b\n    - a.py::b\n", "names a test twice"),
    ("  quarantine:\n    - --co/test_x.py::t\n", "is not a test id"),
])
def test_a_malformed_testing_field_is_refused(tmp_path: Path, testing: str, refusal: str) -> None:
    write_files(tmp_path, {"devops_orchestra.yaml": f"project:\n  name: pay\n  language: python\ntesting:\n"
                                                    f"{testing}deployment:\n  services:\n    - name: payments\n"})
    with pytest.raises(ConfigError, match=refusal):
        load_config(tmp_path)


def test_the_record_is_bounded_and_drops_the_longest_ago_failures(redis: Redis) -> None:
    failing = [{"test": f"t.py::test_{i}", "verdict": "flaky", "runs": 2, "failures": 1}
               for i in range(flaky_record.MAX_TESTS + 5)]
    for i, decision in enumerate(failing):
        flaky_record.update(redis, "pay", "payments", run_id=f"r{i}", decisions=[decision], passed=[],
                            now=1000.0 + i)
    kept = {r.test for r in flaky_record.records(redis, "pay", "payments")}
    assert len(kept) == flaky_record.MAX_TESTS and "t.py::test_0" not in kept and "t.py::test_204" in kept
    flaky_record.update(redis, "pay", "payments", run_id="r9", decisions=[], passed=["t.py::test_204", "new.py::t"])
    records = {r.test: r for r in flaky_record.records(redis, "pay", "payments")}
    assert records["t.py::test_204"].runs == 3 and "new.py::t" not in records  # passing tests never enter


def test_flaky_asks_for_a_known_service(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", "  reruns: 2\n", PAY_TESTS)
    served = settings.with_(repos=(str(repo),))
    unknown = handle(parse("/orchestra flaky nosuch", ["payments"]), ALICE, redis=redis, settings=served)
    assert unknown.kind == ReplyKind.REFUSED and "known services: `payments`" in unknown.text
    bare = handle(parse("/orchestra flaky", ["payments"]), ALICE, redis=redis, settings=served)
    assert bare.kind == ReplyKind.DENIED and "e.g. `/orchestra flaky payments`" in bare.text
    empty = handle(parse("/orchestra flaky payments", ["payments"]), ALICE, redis=redis, settings=served)
    assert (empty.kind, empty.text) == (ReplyKind.ANSWER, "No flaky tests recorded for payments.")


NODE_FLAKY = """import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const COUNTER = %r;

describe("checkout (retry)", () => {
  it("retries the payment [1/3]", () => {
    const n = (existsSync(COUNTER) ? Number(readFileSync(COUNTER, "utf8")) : 0) + 1;
    writeFileSync(COUNTER, String(n));
    expect(n %% 3).not.toBe(1);
  });
  it("always fails", () => {
    expect(1 + 1).toBe(3);
  });
});
"""


def test_a_node_test_failing_one_time_in_three_is_re_run_alone_and_flaky(settings: Settings, redis: Redis,
                                                                       tmp_path: Path) -> None:
    """Vitest on this host (the stage's Node path: npm ci into the cache, the file with -t <full name>)."""
    from orchestra.settings import PROJECT_ROOT

    repo = Path(shutil.copytree(PROJECT_ROOT / "examples" / "fullstack", tmp_path / "fullstack",
                                ignore=shutil.ignore_patterns("node_modules", "dist", "coverage", "__pycache__")))
    (repo / "web" / "tests" / "checkout.test.js").write_text(NODE_FLAKY % str(tmp_path / "retry.count"))
    config = repo / "devops_orchestra.yaml"
    config.write_text(config.read_text().replace("  timeout: 10m\n", "  timeout: 10m\n  quarantine:\n"
                                                 "    - tests/checkout.test.js > checkout (retry) > always fails\n"))
    ctx = AgentContext(run=Run(requested_by="U0DEV", repo=str(repo), services=["web"]), settings=settings,
                       redis=redis, bus=EventBus(redis), workspace=repo, config=load_config(repo), actor="test")
    result = testing_agent.test_service(ctx, "web")

    by_verdict = {d["verdict"]: d for d in result.decisions}
    flaky, quarantined = by_verdict["flaky"], by_verdict["quarantined"]
    assert flaky["test"] == "tests/checkout.test.js > checkout (retry) > retries the payment [1/3]"
    assert [(a["mode"], a["outcome"]) for a in flaky["attempts"]] == [("suite", "failed"), ("alone", "passed"),
                                                                      ("alone", "passed")]
    assert (flaky["runs"], flaky["failures"], flaky["blocking"]) == (3, 1, False)
    assert quarantined["blocking"] is False and result.ok and result.failures == []
