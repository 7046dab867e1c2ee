"""A rollback that fails is retried, counted by the breaker, and told to the thread and the channel."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from redis import Redis
from slack_sdk import WebClient

from agents.context import AgentContext
from agents.observability.autorollback import RETRY_PAUSES_S, RollbackFacts, auto_rollback
from agents.observability.breaker import RollbackBreaker
from agents.observability.policy import Policy
from bot.slack.relay import Relay
from orchestra.config import load_config
from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.slack_workspace import local_slack

FACTS = RollbackFacts("frontend", "production", "v2", "v1", "error_rate stayed above 5.00% for 30s", 30.0,
                      "release", 100)


def _ctx(settings: Settings, redis: Redis, tmp_path: Path) -> AgentContext:
    (tmp_path / "devops_orchestra.yaml").write_text(
        "project: {name: shop}\ndeployment:\n  services:\n    - {name: frontend, path: .}\n")
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(tmp_path), services=["frontend"],
                                     env="production", origin={"slack_channel": "C0DEPLOYS"}))
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                        config=load_config(tmp_path), actor="observe")


class FailingRollback:
    """A rollback whose target keeps refusing (``fails`` times, or always)."""

    def __init__(self, fails: int | None = None) -> None:
        self.fails, self.calls = fails, 0

    def __call__(self) -> None:
        self.calls += 1
        if self.fails is None or self.calls <= self.fails:
            raise OrchestraError("cannot reach the Docker engine at unix:///nowhere.sock")


def test_a_rollback_that_fails_once_is_retried_and_goes_through(settings: Settings, redis: Redis,
                                                                tmp_path: Path) -> None:
    ctx, rollback = _ctx(settings, redis, tmp_path), FailingRollback(fails=1)
    pauses: list[float] = []
    assert auto_rollback(ctx, FACTS, rollback, Policy(specs=()), sleep=pauses.append)
    assert rollback.calls == 2 and pauses == [RETRY_PAUSES_S[0]]
    types = [e.type for e in EventBus(redis).replay(ctx.run.id)]
    assert EventType.ROLLBACK_EVENT in types and EventType.OBSERVABILITY_ALERT not in types


def test_a_rollback_that_keeps_failing_is_counted_and_told_to_the_channel(settings: Settings, redis: Redis,
                                                                         tmp_path: Path) -> None:
    ctx, rollback = _ctx(settings, redis, tmp_path), FailingRollback()
    with local_slack() as (running, control):
        relay = Relay(redis, settings, WebClient(token="xoxb-local", base_url=running.api_url), name="t",
                      post_interval_s=0.05, update_interval_s=0.1)  # reads what is published from now on
        assert not auto_rollback(ctx, FACTS, rollback, Policy(specs=()), sleep=lambda s: None)
        _until(relay, lambda: _loud(control.transcript("C0DEPLOYS")))
        rows = control.transcript("C0DEPLOYS")
    assert rollback.calls == len(RETRY_PAUSES_S) + 1
    assert RollbackBreaker(redis, limit=3).recent("frontend", "production") == 1
    [alert] = [e for e in EventBus(redis).replay(ctx.run.id) if e.type == EventType.OBSERVABILITY_ALERT]
    assert alert.data["kind"] == "rollback_failed" and alert.data["serving"] == "v2"
    assert "cannot reach the Docker engine" in alert.data["error"]
    [parent] = [r for r in rows if not r["reply_broadcast"]]
    [in_channel] = [r for r in rows if r["reply_broadcast"]]
    assert in_channel["thread_ts"] == parent["ts"]  # the same reply, also shown in the channel
    assert any("ROLLBACK FAILED" in r["text"] for r in parent["replies"])
    text = in_channel["text"]
    assert "Traffic is still on v2" in text and "/rollback frontend production" in text


def _loud(rows: list[dict[str, Any]]) -> bool:
    return any(r["reply_broadcast"] and "ROLLBACK FAILED" in r["text"] for r in rows)


def _until(relay: Relay, check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        relay.step(block_ms=20)
        if check():
            return
    raise AssertionError("the relay did not post it in time")
