"""A model's fix to a flaky test, kept only when the test then passes every re-run alone.

The real LLM client talks to the local Messages API server (tests/support/fake_anthropic.py); the stage
runs as the runner runs it, so the re-runs of a fix are the real ones (in the sandbox for the first test).
The flaky test is test_flaky.py's: it counts its runs in a file beside its JUnit report and fails on the
first run of every reports folder, so a fix must stop depending on that file to pass its first re-run.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.testing.flaky_fix import MAX_ASKS, MAX_CHANGED_LINES, FixedFile, FixRefused, FlakyTestFix, check
from bot.slack.views import milestone
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from tests.agents.testing.test_flaky import ONE_IN_THREE, PAY_TESTS, new_run, pay_repo, stage_run
from tests.support.docker_services import DockerEnv
from tests.support.fake_anthropic import FakeAnthropic, fake_anthropic_fixture

KEY = "sk-ant-flakyfix"
TOOL = "record_flaky_test_fix"
server = fake_anthropic_fixture(api_key=KEY)
FLAKY_ASSERT = '    assert _run_number(request, "retry") % 3 != 1, "the payment gateway timed out"\n'
FIXED = PAY_TESTS.replace("def test_retry(request):\n" + FLAKY_ASSERT,
                          "def test_retry(tmp_path):\n    counter = tmp_path / \"retry.count\"  # its own state\n"
                          "    counter.write_text(\"0\")\n"
                          "    assert int(counter.read_text()) % 3 != 1, \"the payment gateway timed out\"\n")
NOT_FIXED = PAY_TESTS.replace(FLAKY_ASSERT, "    # retried by the gateway client\n" + FLAKY_ASSERT)
TESTING = "  reruns: 2\n  fix_runs: 3\n"


@pytest.fixture
def boxed(settings: Settings, docker_env: DockerEnv) -> Settings:
    return settings.with_(sandbox="docker", docker_host=docker_env.url, base_image=docker_env.base_image)


def answer_with(files: dict[str, str], why: str = "the test read a counter earlier runs left behind") -> Any:
    return lambda body: {"explanation": why, "files": [{"path": p, "content": c} for p, c in files.items()]}


def fixes(event_data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["test"]: d["fix"] for d in event_data["services"]["payments"]["decisions"] if "fix" in d}


@pytest.mark.docker
def test_a_fix_that_removes_the_shared_state_holds_in_every_run_and_is_offered(
        boxed: Settings, redis: Redis, server: FakeAnthropic, tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", TESTING, PAY_TESTS)
    server.on_tool(TOOL, answer_with({"tests/test_pay.py": FIXED}))
    _, event = stage_run(repo, server.client_settings(boxed), redis)

    assert event.data["passed"] is True, event.data["summary"]
    fix = fixes(event.data)["tests/test_pay.py::test_retry"]
    assert (fix["status"], fix["runs"], fix["runs_passed"], fix["suite_order"]) == ("kept", 3, 3, "passed"), fix
    assert fix["reason"] == "held in 3 of 3 runs alone" and fix["files"] == ["tests/test_pay.py"]
    assert fix["patch"].startswith("--- a/payments/tests/test_pay.py\n+++ b/payments/tests/test_pay.py\n")
    (tmp_path / "fix.patch").write_text(fix["patch"])
    subprocess.run(["git", "-C", str(repo), "apply", "--check", str(tmp_path / "fix.patch")], check=True)
    assert (repo / "payments" / "tests" / "test_pay.py").read_text() == PAY_TESTS  # offered, never committed
    line = milestone(event)
    assert line is not None and "a suggested fix for tests/test_pay.py::test_retry held in 3 of 3 runs: offered" \
        in line
    [request] = server.requests
    prompt = request.body["messages"][0]["content"]
    assert '<untrusted-data name="test_source"' in prompt and "def test_retry(request):" in prompt
    assert "run 1: in the suite (2 of 2), failed" in prompt and "the payment gateway timed out" in prompt


def test_a_fix_that_does_not_remove_the_flakiness_is_not_kept_and_says_which_run_failed(
        settings: Settings, redis: Redis, server: FakeAnthropic, tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", TESTING, PAY_TESTS)
    server.on_tool(TOOL, answer_with({"tests/test_pay.py": NOT_FIXED}))
    _, event = stage_run(repo, server.client_settings(settings), redis)

    fix = fixes(event.data)["tests/test_pay.py::test_retry"]
    assert (fix["status"], fix["runs_passed"]) == ("not kept", 0), fix
    assert fix["reason"] == "run 1 of 3 alone failed" and "patch" not in fix
    assert "suggested fix" not in event.data["summary"]  # nothing is offered
    assert event.data["passed"] is True  # the flaky test itself still does not block


ORDER_DEPENDENT = PAY_TESTS.replace("def test_charge():\n", "STATE = {}\n\n\ndef test_charge():\n"
                                    "    STATE['charged'] = True\n").replace(
    "def test_retry(request):\n" + FLAKY_ASSERT, "def test_retry():\n    assert not STATE, 'charged before'\n")


def test_a_fix_that_passes_alone_but_fails_in_the_suite_order_is_not_kept(
        settings: Settings, redis: Redis, server: FakeAnthropic, tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", TESTING, PAY_TESTS)
    server.on_tool(TOOL, answer_with({"tests/test_pay.py": ORDER_DEPENDENT}))
    _, event = stage_run(repo, server.client_settings(settings), redis)

    fix = fixes(event.data)["tests/test_pay.py::test_retry"]
    assert (fix["status"], fix["runs_passed"], fix["suite_order"]) == ("not kept", 3, "failed"), fix
    assert fix["reason"] == "held in 3 of 3 runs alone, then failed in the suite's order" and "patch" not in fix


HOSTILE_TESTS = ONE_IN_THREE + "".join(f'''

def test_{name}(request):
    assert _run_number(request, "{name}") % 3 != 1
''' for name in ("app", "climb", "conftest", "fourth"))


def test_a_fix_reaching_outside_the_tests_is_refused_unrun_and_at_most_three_are_asked(
        settings: Settings, redis: Redis, server: FakeAnthropic, tmp_path: Path) -> None:
    repo = tmp_path / "pay"
    run = new_run(repo, redis)
    sentinel = tmp_path / "pwned"
    writes = f"open({str(sentinel)!r}, 'w').write('ran')\n"
    answers = {"test_app": {"app.py": "def charge(amount):\n    return 0\n" + writes},
               "test_climb": {"tests/../app.py": writes},
               "test_conftest": {"tests/conftest.py": writes},
               "test_fourth": {"tests/test_pay.py": HOSTILE_TESTS}}

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        name = next(n for n in answers if f"::{n}" in body["messages"][0]["content"])
        return answer_with(answers[name])(body)

    server.on_tool(TOOL, answer)
    pay_repo(repo, TESTING, HOSTILE_TESTS)
    _, event = stage_run(repo, server.client_settings(settings), redis, run)

    found = fixes(event.data)
    reasons = {test.rpartition("::")[2]: (f["status"], f["reason"]) for test, f in found.items()}
    assert reasons["test_app"] == ("refused", "refused, not run: `app.py` is outside tests/: a fix changes the "
                                              "test, never the service's code")
    assert reasons["test_climb"][0] == "refused" and "climbs out of its folder (`..`)" in reasons["test_climb"][1]
    assert reasons["test_conftest"][0] == "refused" and "is a conftest" in reasons["test_conftest"][1]
    assert reasons["test_fourth"] == ("not asked", f"at most {MAX_ASKS} fixes are asked for per service")
    assert len(server.requests) == MAX_ASKS and not sentinel.exists()
    assert (repo / "payments" / "app.py").read_text() == "def charge(amount):\n    return amount\n"
    assert not (settings.run_dir(run.id) / "flaky-fix").exists()  # no scratch copy was made, or it is gone


def test_no_model_configured_means_nothing_asked_and_nothing_offered(settings: Settings, redis: Redis,
                                                                      tmp_path: Path) -> None:
    repo = pay_repo(tmp_path / "pay", TESTING, PAY_TESTS)
    run, event = stage_run(repo, settings, redis)
    [decision] = event.data["services"]["payments"]["decisions"]
    assert decision["verdict"] == "flaky" and "fix" not in decision
    assert not [e for e in EventBus(redis).replay(run.id) if e.type == EventType.LLM_CALL]
    assert "suggested fix" not in event.data["summary"]


def fix_of(files: dict[str, str]) -> FlakyTestFix:
    return FlakyTestFix(explanation="x", files=[FixedFile(path=p, content=c) for p, c in files.items()])


@pytest.mark.parametrize("files, refusal", [
    ({"/etc/cron.d/x.py": "x"}, "is an absolute path"),
    ({"~/x.py": "x"}, "is an absolute path"),
    ({"tests/sub/../../app.py": "x"}, "climbs out of its folder"),
    ({"tests\\..\\app.py": "x"}, "is not a file path"),
    ({"tests/pytest.ini": "[pytest]\naddopts = -p evil\n"}, "is not a Python file"),
    ({"tests/linked/test_x.py": "x"}, "is, or is inside, a symbolic link"),
    ({"tests/test_pay.py": "x = 1\n" * (MAX_CHANGED_LINES + 1)}, f"changes {MAX_CHANGED_LINES + 3} lines"),
    ({"tests/test_pay.py": "def test_a():\n    pass\n"}, "changes nothing"),
    ({}, "changes no file"),
])
def test_a_fix_is_checked_before_anything_runs(tmp_path: Path, files: dict[str, str], refusal: str) -> None:
    home = tmp_path / "svc"
    (home / "tests").mkdir(parents=True)
    (home / "tests" / "test_pay.py").write_text("def test_a():\n    pass\n")
    (tmp_path / "elsewhere").mkdir()
    (home / "tests" / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FixRefused, match=refusal.replace("(", r"\(")):
        check(fix_of(files), home)


def test_fix_runs_is_bounded(tmp_path: Path) -> None:
    from orchestra.config import load_config
    from orchestra.errors import ConfigError
    from tests.support.files import write_files

    for value, refusal in (("0", "must be at least 1"), ("21", "must be at most 20"),
                           ("five", "must be a whole number")):
        write_files(tmp_path, {"devops_orchestra.yaml": f"project:\n  name: pay\n  language: python\ntesting:\n"
                                                        f"  fix_runs: {value}\ndeployment:\n  services:\n"
                                                        "    - name: payments\n"})
        with pytest.raises(ConfigError, match=f"testing.fix_runs: {refusal}"):
            load_config(tmp_path)
