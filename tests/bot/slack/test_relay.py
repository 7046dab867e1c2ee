"""The relay turns a run's events into one Slack thread, paced, and loses nothing when Slack errors."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from slack_sdk import WebClient

from bot.localslack import Running
from bot.localslack.client import WorkspaceClient
from bot.slack.pacer import Pacer
from bot.slack.relay import RELAY_GROUP, Relay
from bot.slack.threads import Threads
from jobs.dispatch import dispatch
from orchestra.events import EventBus, EventType, dead_letters
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.support.slack_workspace import local_slack


@pytest.fixture
def slack() -> Iterator[tuple[Running, WorkspaceClient]]:
    with local_slack() as pair:
        yield pair


class RecordingPacer(Pacer):
    """The relay's pacer, also noting when (on its own clock) it let each post go."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(interval_s)
        self.sends: list[float] = []

    def sent(self, channel: str) -> None:
        self.sends.append(self.clock())
        super().sent(channel)


PLAN = ":clipboard: Plan: `analyze` → `test` → `build` → `iac` → `deploy` → `observe`. Each step reports here."


def _relay(redis: Redis, settings: Settings, running: Running, **options: Any) -> Relay:
    client = WebClient(token="xoxb-local", base_url=running.api_url)
    options.setdefault("post_interval_s", 0.05)
    options.setdefault("update_interval_s", 0.1)
    return Relay(redis, settings, client, name=options.pop("name", "test"), **options)


def _run(redis: Redis, **fields: Any) -> Run:
    run = Run(requested_by="U0ALICE", repo="/tmp/shop", services=["frontend"], env="production",
              ref="hotfix-v2", origin={"slack_channel": "C0DEPLOYS"}, **fields)
    return RunStore(redis).create(run)


def _until(relay: Relay, check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        relay.step(block_ms=20)
        if check():
            return
    raise AssertionError("relay did not get there in time")


def _thread(control: WorkspaceClient) -> dict[str, Any]:
    return control.transcript("C0DEPLOYS")[0]


def _caught_up(redis: Redis) -> bool:
    """The relay group has read everything and acked it."""
    group = next(g for g in redis.xinfo_groups(EventBus(redis).stream) if g["name"] == RELAY_GROUP.encode())
    return group["lag"] == 0 and group["pending"] == 0


def _pending(redis: Redis) -> int:
    return int(redis.xpending(EventBus(redis).stream, RELAY_GROUP)["pending"])


def test_one_parent_updated_in_place_with_milestone_replies(redis: Redis, settings: Settings,
                                                            slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    run = _run(redis)
    bus.emit(run.id, EventType.RUN_REQUESTED, "U0ALICE")
    bus.emit(run.id, EventType.STAGE_STARTED, "analyze", stage="analyze")
    bus.emit(run.id, EventType.CODE_ANALYSIS_RESULT, "analyze", passed=True, summary="no findings")
    bus.emit(run.id, EventType.TEST_RESULTS, "test", passed=False, summary="2 of 14 tests failed")
    RunStore(redis).update(run.id, status=RunStatus.FAILED, reason="2 of 14 tests failed")
    bus.emit(run.id, EventType.RUN_FINISHED, "orchestra", status="failed", reason="2 of 14 tests failed",
             duration_s=12.5)
    _until(relay, lambda: len(_thread(control)["replies"]) == 4 and ":x:" in _thread(control)["text"])
    parent = _thread(control)
    assert len(control.transcript("C0DEPLOYS")) == 1
    assert run.id in parent["text"] and "frontend" in parent["text"] and "hotfix-v2" in parent["text"]
    assert parent["edits"] >= 1 and "failed" in parent["text"]
    replies = [r["text"] for r in parent["replies"]]
    assert replies[0] == PLAN
    assert replies[1] == ":white_check_mark: Code analysis: no findings"
    assert replies[2] == ":x: Tests: 2 of 14 tests failed"
    assert replies[3].startswith(":x: Run failed: 2 of 14 tests failed (12s)")
    assert _pending(redis) == 0


def test_approval_buttons_then_decision_removes_them(redis: Redis, settings: Settings,
                                                     slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    run = _run(redis, status=RunStatus.AWAITING_APPROVAL, commit="3f9c2ab00")
    bus.emit(run.id, EventType.APPROVAL_REQUESTED, "orchestra", stage="deploy", env="production",
             requester="U0ALICE", approvers=["U0ALICE", "U0BOB"], commit="3f9c2ab00", deadline=time.time() + 1800)
    _until(relay, lambda: _thread(control)["replies"])
    ask = _thread(control)["replies"][0]
    assert [(b["text"], b["action_id"], b["value"]) for b in ask["buttons"]] == [
        ("Approve", "approve", f"{run.id}|3f9c2ab00"), ("Reject", "reject", f"{run.id}|3f9c2ab00")]
    assert "<@U0BOB>" in ask["text"] and "3f9c2ab" in ask["text"]
    bus.emit(run.id, EventType.APPROVAL_GRANTED, "U0BOB", stage="deploy", decided_by="U0BOB")
    _until(relay, lambda: len(_thread(control)["replies"]) == 2)
    ask, decided = _thread(control)["replies"]
    assert ask["buttons"] == [] and "Approved by <@U0BOB>" in ask["text"]
    assert decided["text"] == ":white_check_mark: Approved by <@U0BOB>."
    assert Threads(redis).get(run.id).approval_ts == ask["ts"]  # type: ignore[union-attr]


def test_429_retry_after_is_honoured_and_nothing_is_lost(redis: Redis, settings: Settings,
                                                         slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    run = _run(redis)
    control.fail_next("chat.postMessage", count=2, status=429, error="ratelimited", retry_after=1)
    started = time.monotonic()
    bus.emit(run.id, EventType.RUN_REQUESTED, "U0ALICE")
    bus.emit(run.id, EventType.BUILD_READY, "build", passed=True, summary="image shop/frontend:3f9c2ab")
    _until(relay, lambda: len(_thread(control)["replies"]) == 2 if control.transcript("C0DEPLOYS") else False)
    assert time.monotonic() - started >= 2.0  # two Retry-After: 1 waits
    assert relay.stats.rate_limited == 2
    assert [r["text"] for r in _thread(control)["replies"]] == [
        PLAN, ":white_check_mark: Build: image shop/frontend:3f9c2ab"]
    assert _pending(redis) == 0


def test_server_errors_are_retried_and_events_stay_pending_meanwhile(
        redis: Redis, settings: Settings, slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    run = _run(redis)
    control.fail_next("chat.postMessage", count=2, status=500, error="internal_error")
    bus.emit(run.id, EventType.DEPLOYMENT_SUCCEEDED, "deploy", summary="frontend hotfix-v2 is live")
    relay.step(block_ms=50)
    assert _pending(redis) == 1 and relay.stats.errors == 1
    _until(relay, lambda: control.transcript("C0DEPLOYS") and _thread(control)["replies"])
    assert _thread(control)["replies"][0]["text"] == ":white_check_mark: Deployed: frontend hotfix-v2 is live"
    assert _pending(redis) == 0


def test_a_crashed_relay_leaves_events_for_the_next_one(redis: Redis, settings: Settings,
                                                        slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    first = _relay(redis, settings, running, name="first")
    bus = EventBus(redis)
    run = _run(redis)
    control.fail_next("*", count=1000, status=503, error="service_unavailable")
    bus.emit(run.id, EventType.ROLLBACK_EVENT, "observe", summary="p99 1200 ms > 800 ms")
    first.step(block_ms=50)
    assert _pending(redis) == 1
    control.reset()  # Slack is back; "first" never comes back
    second = _relay(redis, settings, running, name="second", claim_idle_ms=100)
    _until(second, lambda: control.transcript("C0DEPLOYS") and _thread(control)["replies"])
    assert "p99 1200 ms &gt; 800 ms" in _thread(control)["replies"][0]["text"]  # Slack's escaping of >
    assert _pending(redis) == 0


def test_posts_are_paced_per_channel_and_updates_coalesced(redis: Redis, settings: Settings,
                                                           slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running, post_interval_s=0.25, update_interval_s=0.5)
    pacer = relay.pacer = RecordingPacer(relay.pacer.interval_s)
    bus = EventBus(redis)
    run = _run(redis)
    bus.emit(run.id, EventType.RUN_REQUESTED, "U0ALICE")
    for i in range(30):
        bus.emit(run.id, EventType.DEPLOYMENT_PROGRESS, "deploy", message=f"{i}% of traffic")
    for name in ("analysis", "tests", "build"):
        bus.emit(run.id, EventType.IAC_READY, "iac", passed=True, summary=name)
    _until(relay, lambda: len(_thread(control)["replies"]) == 4 and not relay.dirty)
    assert len(control.calls("chat.postMessage")) == 5  # the parent, the plan and three milestones
    # Spacing is checked where the pacer decides, on its clock: the server's receive times add
    # network and scheduling jitter that the pacer does not control.
    assert len(pacer.sends) == 5
    # A burst of two may go at once (the parent and its first reply); never more than two in any interval.
    burst = relay.pacer.burst
    assert all(b >= a + 0.25 for a, b in zip(pacer.sends, pacer.sends[burst:], strict=False)), pacer.sends
    assert pacer.sends[1] - pacer.sends[0] < 0.25  # the plan did not wait for the pacer
    assert len(control.calls("chat.update")) <= 3  # 30 progress events, a handful of edits


def test_an_expired_approval_loses_its_buttons(redis: Redis, settings: Settings,
                                               slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    run = _run(redis, status=RunStatus.AWAITING_APPROVAL)
    bus.emit(run.id, EventType.APPROVAL_REQUESTED, "orchestra", stage="deploy", approvers=["U0BOB"],
             requester="U0ALICE", deadline=time.time() + 60)
    bus.emit(run.id, EventType.APPROVAL_EXPIRED, "orchestra", stage="deploy", decided_by="orchestra")
    _until(relay, lambda: len(_thread(control)["replies"]) == 2)
    ask, expired = _thread(control)["replies"]
    assert ask["buttons"] == [] and "expired" in ask["text"]
    assert expired["text"] == ":hourglass: The approval request expired; nothing was deployed."


def test_events_of_unknown_runs_and_model_calls_are_skipped(redis: Redis, settings: Settings,
                                                           slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    bus.emit("no-run", EventType.LLM_CALL, "llm", prompt="parse_intent")
    bus.emit("r-20261121-ffffff", EventType.TEST_RESULTS, "test", passed=True, summary="ok")
    _until(relay, lambda: _caught_up(redis))
    assert control.transcript() == [] and control.calls("chat.postMessage") == []


def _project(tmp_path: Path, chatops: str) -> Path:
    repo = tmp_path / "svc"
    (repo / "app").mkdir(parents=True)
    (repo / "devops_orchestra.yaml").write_text(
        "project:\n  name: svc\ndeployment:\n  services:\n    - name: app\n      path: app\n" + chatops)
    return repo


def _pushed(redis: Redis, settings: Settings, repo: Path) -> Run:
    """A run started by a push, through dispatch (which picks the run's channel from the project)."""
    intent = Intent(kind=IntentKind.VALIDATE, service="app", user="github:octocat", source="github",
                    origin={"event": "push"})
    return dispatch(intent, redis=redis, settings=settings, repo=repo)


def test_runs_from_elsewhere_go_to_the_projects_channel(redis: Redis, settings: Settings, tmp_path: Path,
                                                        slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    control.add_channel("C0RELEASES", "releases")
    repo = _project(tmp_path, 'chatops:\n  channel: "#releases"\n')
    relay = _relay(redis, settings, running)
    run = _pushed(redis, settings, repo)  # the run's first event is its code_push
    _until(relay, lambda: control.transcript("releases"))
    assert run.id in control.transcript("releases")[0]["text"]


def test_chatops_off_means_no_thread(redis: Redis, settings: Settings, tmp_path: Path,
                                     slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    repo = _project(tmp_path, "chatops:\n  enabled: false\n")
    relay = _relay(redis, settings, running)
    run = _pushed(redis, settings, repo)
    EventBus(redis).emit(run.id, EventType.TEST_RESULTS, "test", passed=True, summary="ok")
    _until(relay, lambda: _caught_up(redis))
    assert control.transcript() == []


def test_a_channel_that_does_not_exist_is_dead_lettered_not_retried_forever(
        redis: Redis, settings: Settings, slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    lost = RunStore(redis).create(Run(requested_by="U0ALICE", repo="/tmp/shop", services=["frontend"],
                                      origin={"slack_channel": "C0GONE"}))
    fine = _run(redis)
    EventBus(redis).emit(lost.id, EventType.TEST_RESULTS, "test", passed=True, summary="ok")
    EventBus(redis).emit(fine.id, EventType.TEST_RESULTS, "test", passed=True, summary="ok")
    _until(relay, lambda: _caught_up(redis) and control.transcript("C0DEPLOYS"))
    dead = dead_letters(redis)
    assert [(json.loads(d["event"])["run_id"], d["reason"]) for d in dead] == [(lost.id, "slack: channel_not_found")]
    assert _thread(control)["replies"][0]["text"] == ":white_check_mark: Tests: ok"


def test_secrets_in_events_never_reach_slack(redis: Redis, settings: Settings,
                                             slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    run = _run(redis)
    EventBus(redis).emit(run.id, EventType.STAGE_FAILED, "build", stage="build",
                         reason="pip failed: https://user:sk-ant-api03-abcdefghijkl@pypi.internal/simple")
    _until(relay, lambda: control.transcript("C0DEPLOYS") and _thread(control)["replies"])
    posted = [c["args"] for c in control.calls("chat.postMessage")]
    assert all("sk-ant-api03" not in str(args) for args in posted)
    assert "[REDACTED]" in _thread(control)["replies"][0]["text"]


def test_a_vanished_approval_message_does_not_hold_up_the_decision(
        redis: Redis, settings: Settings, slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    run = _run(redis, status=RunStatus.AWAITING_APPROVAL)
    bus.emit(run.id, EventType.APPROVAL_REQUESTED, "orchestra", stage="deploy", approvers=["U0BOB"],
             requester="U0ALICE", deadline=time.time() + 60)
    _until(relay, lambda: _thread(control)["replies"])
    control.fail_next("chat.update", count=5, error="message_not_found")
    bus.emit(run.id, EventType.APPROVAL_REJECTED, "U0BOB", stage="deploy", decided_by="U0BOB")
    _until(relay, lambda: len(_thread(control)["replies"]) == 2 and _caught_up(redis))
    assert _thread(control)["replies"][1]["text"] == ":no_entry_sign: Rejected by <@U0BOB>."
    assert dead_letters(redis) == []


def test_a_parent_that_would_read_the_same_is_not_edited(redis: Redis, settings: Settings,
                                                         slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    relay = _relay(redis, settings, running)
    bus = EventBus(redis)
    run = _run(redis)
    bus.emit(run.id, EventType.RUN_REQUESTED, "U0ALICE")
    bus.emit(run.id, EventType.CODE_ANALYSIS_RESULT, "analyze", passed=True, summary="no findings")
    _until(relay, lambda: len(_thread(control)["replies"]) == 2 and not relay.dirty)
    assert control.calls("chat.update") == []  # the run record did not change: nothing to edit
    RunStore(redis).update(run.id, status=RunStatus.RUNNING, stage="test")
    bus.emit(run.id, EventType.STAGE_STARTED, "test", stage="test")
    _until(relay, lambda: "running" in _thread(control)["text"] and not relay.dirty)
    assert len(control.calls("chat.update")) == 1
