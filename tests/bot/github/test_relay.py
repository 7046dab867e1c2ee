"""The GitHub relay: a run's events become one PR comment, updated in place, and commit statuses."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis import Redis

from bot.github.client import GitHubClient
from bot.github.relay import MARKER, STATE_KEY, GitHubRelay, render_comment, view_of
from orchestra.events import Event, EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.support.fake_github import FakeGitHub, fake_github
from tests.support.services import wait_for

REPO = "Codertocat/Hello-World"
SHA = "c" * 40
FINDING = {"tool": "ruff", "rule": "F821", "message": "undefined name `reqeust`", "file": "backend/app.py",
           "line": 12, "severity": "error"}
WARNING = {**FINDING, "rule": "E501", "severity": "warning", "line": 3}
FAILED_TESTS = {"passed": False, "summary": "1 test(s) failed", "services": {"backend": {
    "service": "backend", "ran": True, "ok": False, "failed": 1,
    "failures": [{"test": "tests.test_app::test_health", "file": "backend/tests/test_app.py", "line": 8,
                  "message": "assert 500 == 200"}]}}}


def _run(kind: str = "validate", *, source: str = "github", pr: int | None = 2) -> Run:
    origin: dict[str, object] = {"repo": REPO, "sha": SHA, "delivery": "d-1", "changed_files": ["backend/app.py"]}
    if pr:
        origin["pr"] = pr
    return Run(kind=kind, source=source, requested_by="github:alice", repo="/srv/Hello-World",
               services=["backend"], env="staging", commit=SHA, origin=origin)


def _events(run: Run, *types_and_data: tuple[EventType, dict[str, object]]) -> list[Event]:
    return [Event(run_id=run.id, type=t, actor="test", data=d) for t, d in types_and_data]


def test_a_passing_validation_is_safe_to_merge() -> None:
    run = _run().model_copy(update={"status": RunStatus.SUCCEEDED})
    events = _events(run, (EventType.STAGE_STARTED, {"stage": "analyze"}),
                     (EventType.CODE_ANALYSIS_RESULT, {"stage": "analyze", "passed": True, "summary": "ok",
                                                       "findings": [WARNING]}),
                     (EventType.STAGE_STARTED, {"stage": "test"}),
                     (EventType.TEST_RESULTS, {"stage": "test", "passed": True, "summary": "3 passed"}))
    view = view_of(run, events)
    body = render_comment(run, view)
    assert view.state == "success"
    assert body.startswith(MARKER.format(run_id=run.id))
    assert "✅ DevOps Orchestra: Safe to merge and deploy (#2)" in body
    assert "| analyze | passed |" in body and "| test | passed |" in body
    assert "E501" not in body  # warnings do not block and are not listed as failures


def test_a_failing_validation_says_exactly_what_failed() -> None:
    run = _run().model_copy(update={"status": RunStatus.FAILED, "reason": "test failed: 1 test(s) failed"})
    events = _events(run, (EventType.CODE_ANALYSIS_RESULT, {"stage": "analyze", "passed": False,
                                                            "summary": "1 error", "findings": [FINDING, WARNING]}),
                     (EventType.TEST_RESULTS, {"stage": "test", **FAILED_TESTS}))
    view = view_of(run, events)
    body = render_comment(run, view)
    assert view.state == "failure"
    assert "❌ DevOps Orchestra: Not safe to merge (#2): test failed: 1 test(s) failed" in body
    assert "`backend/app.py:12` F821: undefined name `reqeust`" in body
    assert "`tests.test_app::test_health` (`backend/tests/test_app.py:8`): assert 500 == 200" in body


@dataclass
class RelayThread:
    gh: FakeGitHub
    stop: threading.Event
    thread: threading.Thread


@pytest.fixture
def relay(settings: Settings, redis: Redis) -> Iterator[RelayThread]:
    with fake_github() as gh:
        stop, ready = threading.Event(), threading.Event()

        async def main() -> None:
            async with GitHubClient(gh.token, base_url=gh.url) as client:
                worker = GitHubRelay(settings, redis=redis, client=client)
                ready.set()
                await worker.run(stop, block_ms=100)

        thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        thread.start()
        assert ready.wait(10)
        yield RelayThread(gh, stop, thread)
        stop.set()
        thread.join(10)


def test_one_comment_per_run_updated_in_place_and_statuses(relay: RelayThread, redis: Redis) -> None:
    run = RunStore(redis).create(_run())
    bus, gh = EventBus(redis), relay.gh
    bus.emit(run.id, EventType.RUN_REQUESTED, "github:alice", kind="validate")
    wait_for(lambda: gh.comment_bodies(REPO, 2), what="the PR comment")
    # The status is posted after the comment: wait for it, and for nothing else.
    wait_for(lambda: gh.status_states(REPO, SHA) == [("orchestra/validate", "pending")], what="the pending status")
    bus.emit(run.id, EventType.STAGE_STARTED, "analyze", stage="analyze")
    bus.emit(run.id, EventType.CODE_ANALYSIS_RESULT, "analyze", stage="analyze", passed=False,
             summary="1 error", findings=[FINDING])
    RunStore(redis).update(run.id, status=RunStatus.FAILED, reason="analyze failed: 1 error")
    bus.emit(run.id, EventType.RUN_FINISHED, "orchestra", status="failed", reason="analyze failed: 1 error")
    wait_for(lambda: "❌" in gh.comment_bodies(REPO, 2)[0], what="the failure in the comment")
    wait_for(lambda: gh.status_states(REPO, SHA)[-1] == ("orchestra/validate", "failure"), what="status")
    body = gh.comment_bodies(REPO, 2)
    assert len(body) == 1 and "`backend/app.py:12` F821" in body[0]
    assert len(gh.calls_to("POST", f"/repos/{REPO}/issues/2/comments")) == 1
    assert gh.calls_to("PATCH", f"/repos/{REPO}/issues/comments/")
    assert [s for _, s in gh.status_states(REPO, SHA)] == ["pending", "failure"]


def test_a_restarted_relay_finds_its_comment_by_the_marker(relay: RelayThread, redis: Redis,
                                                          settings: Settings) -> None:
    run = RunStore(redis).create(_run("deploy", pr=2))
    relay.gh.comments[(REPO, 2)] = [{"id": 1, "body": "unrelated", "user": {"login": "bob"}},
                                    {"id": 77, "body": MARKER.format(run_id=run.id) + "\nold", "user": {}}]
    redis.delete(STATE_KEY.format(run_id=run.id))  # what a restart with lost state looks like
    RunStore(redis).update(run.id, status=RunStatus.SUCCEEDED, reason="deployed")
    EventBus(redis).emit(run.id, EventType.RUN_FINISHED, "orchestra", status="succeeded")
    wait_for(lambda: "Deployed (to staging)" in relay.gh.comment_bodies(REPO, 2)[1], what="updated comment")
    assert len(relay.gh.comment_bodies(REPO, 2)) == 2
    assert relay.gh.calls_to("POST", f"/repos/{REPO}/issues/2/comments") == []
    wait_for(lambda: relay.gh.status_states(REPO, SHA) == [("orchestra/deploy-staging", "success")],
             what="the success status, after the comment")


def test_runs_from_elsewhere_and_pushes_without_a_pr(relay: RelayThread, redis: Redis) -> None:
    slack = RunStore(redis).create(_run(source="slack"))
    pushed = RunStore(redis).create(_run("deploy", pr=None))
    bus = EventBus(redis)
    bus.emit(slack.id, EventType.RUN_REQUESTED, "U1")
    bus.emit(pushed.id, EventType.CODE_PUSH, "github:alice")
    wait_for(lambda: relay.gh.status_states(REPO, SHA), what="the push's commit status")
    assert relay.gh.status_states(REPO, SHA) == [("orchestra/deploy-staging", "pending")]
    assert relay.gh.comments == {}


def test_a_github_outage_leaves_the_event_pending_for_a_retry(settings: Settings, redis: Redis) -> None:
    with fake_github() as gh:
        run = RunStore(redis).create(_run())

        async def main() -> None:
            async with GitHubClient(gh.token, base_url=gh.url, max_attempts=1) as client:
                worker = GitHubRelay(settings, redis=redis, client=client)
                worker.consumer.claim_idle_ms = 0
                EventBus(redis).emit(run.id, EventType.RUN_REQUESTED, "github:alice")
                gh.fail_next("POST", f"/repos/{REPO}/statuses/", 502, times=1)
                stop = threading.Event()
                task = asyncio.create_task(worker.run(stop, block_ms=50))
                while not gh.status_states(REPO, SHA):
                    await asyncio.sleep(0.05)
                stop.set()
                await task

        asyncio.run(asyncio.wait_for(main(), 10))
        assert gh.status_states(REPO, SHA) == [("orchestra/validate", "pending")]
        assert len(gh.calls_to("POST", f"/repos/{REPO}/statuses/")) == 2
        assert len(gh.comment_bodies(REPO, 2)) == 1


def test_secrets_in_failures_never_reach_the_comment() -> None:
    run = _run().model_copy(update={"status": RunStatus.FAILED, "reason": "test failed"})
    leaked = {**FINDING, "message": "hard-coded password = 'hunter2hunter2' and token "
                                    "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}
    body = render_comment(run, view_of(run, _events(run, (EventType.CODE_ANALYSIS_RESULT, {
        "stage": "analyze", "passed": False, "findings": [leaked]}))))
    assert "hunter2hunter2" not in body and "ghp_abcdefghijklmnopqrstuvwxyz0123456789" not in body
    assert "[REDACTED]" in body
