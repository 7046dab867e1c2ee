"""A pinned version is not rolled back from (nor away from, to another version) by the watch without saying so.

The real watch (the observe stage's loop of looks) over a real Prometheus scraping a release that
serves 5% errors under load; the pin is put in place through orchestra.pins while the watch runs.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from slack_sdk import WebClient

from agents.context import AgentContext
from agents.observability.autorollback import RollbackFacts, auto_rollback
from agents.observability.breaker import RollbackBreaker
from agents.observability.policy import Policy, default_specs
from agents.observability.stage import run
from agents.observability.watch import WatchedRelease
from bot.slack.relay import Relay
from orchestra import pins
from orchestra.config import ProjectConfig
from orchestra.events import Event, EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.fleet import Fleet, fleet
from tests.support.services import wait_for
from tests.support.slack_workspace import local_slack

pytestmark = pytest.mark.slow

RELEASE = WatchedRelease("backend", "staging", "v2-errors", "v1")


@pytest.fixture(scope="module")
def shop() -> Iterator[Fleet]:
    with fleet({"v1": {"base_latency_ms": 20}, "v2-errors": {"base_latency_ms": 20, "error_rate": 0.05}}) as running:
        yield running


class _Source:
    """The deploy agent's side of the watch: what went live, and a rollback that records itself."""

    def __init__(self) -> None:
        self.rolled_back: list[WatchedRelease] = []

    def releases(self, ctx: AgentContext) -> list[WatchedRelease]:
        return [RELEASE]

    def rollback(self, ctx: AgentContext, release: WatchedRelease) -> None:
        self.rolled_back.append(release)


def _ctx(redis: Redis, settings: Settings, tmp_path: Path, **run: Any) -> AgentContext:
    config = ProjectConfig.model_validate({"project": {"name": "shop"},
                                           "deployment": {"services": [{"name": "backend"}]}})
    run_ = RunStore(redis).create(Run(requested_by="alice", repo="examples/shop", services=["backend"],
                                      env="staging", **run))
    return AgentContext(run=run_, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                        config=config, actor="observe")


def _policy() -> Policy:
    return Policy(specs=default_specs(error_rate=0.02), watch_s=30.0, breach_s=3.0, poll_s=1.0,
                  max_rollbacks_per_hour=3)


def _events(ctx: AgentContext, type_: EventType) -> list[Event]:
    return [e for e in ctx.bus.replay(ctx.run.id) if e.type == type_]


def test_a_pin_put_on_the_failing_release_while_it_is_watched_stops_the_rollback(shop: Fleet, redis: Redis,
                                                                                 settings: Settings,
                                                                                 tmp_path: Path) -> None:
    ctx, source = _ctx(redis, settings, tmp_path), _Source()
    pin = pins.Pin(service="backend", env="staging", version="v2-errors", by="U0CAROL")
    later = threading.Timer(1.0, pins.put, args=(redis, pin))  # after the watch began, before it acts
    later.start()
    result = run(ctx, source=source, prom=shop.prom.client, policy=_policy())
    later.join()
    assert not result.passed and source.rolled_back == []
    assert "NOT rolled back" in result.summary
    [alert] = [e.data for e in _events(ctx, EventType.OBSERVABILITY_ALERT) if e.data["kind"] == "rollback_pinned"]
    assert (alert["pinned_version"], alert["pinned_by"], alert["to_version"]) == ("v2-errors", "U0CAROL", "v1")
    assert "error_rate stayed above" in alert["message"] and "pinned to v2-errors by <@U0CAROL>" in alert["message"]
    assert "Traffic stays on the pinned version v2-errors itself" in alert["message"]
    assert "`/rollback backend v2-errors staging`" in alert["message"]
    assert _events(ctx, EventType.ROLLBACK_EVENT) == []
    assert RollbackBreaker(redis, limit=3).recent("backend", "staging") == 0  # nothing was tried


def test_a_pin_on_the_version_the_watch_goes_back_to_lets_it_go_and_says_so(shop: Fleet, redis: Redis,
                                                                          settings: Settings, tmp_path: Path) -> None:
    ctx, source = _ctx(redis, settings, tmp_path), _Source()
    pins.put(redis, pins.Pin(service="backend", env="staging", version="v1", by="U0CAROL"))
    result = run(ctx, source=source, prom=shop.prom.client, policy=_policy())
    assert not result.passed and source.rolled_back == [RELEASE]
    [event] = _events(ctx, EventType.ROLLBACK_EVENT)
    assert (event.data["to_version"], event.data["pinned_by"]) == ("v1", "U0CAROL")
    assert not [e for e in _events(ctx, EventType.OBSERVABILITY_ALERT) if e.data["kind"] == "rollback_pinned"]


def test_a_pin_on_a_third_version_stops_a_rollback_to_the_previous_one_and_the_channel_hears(
        redis: Redis, settings: Settings, tmp_path: Path) -> None:
    ctx, calls = _ctx(redis, settings, tmp_path, origin={"slack_channel": "C0DEPLOYS"}), []
    pins.put(redis, pins.Pin(service="backend", env="staging", version="v0", by="U0CAROL"))
    facts = RollbackFacts("backend", "staging", "v2", "v1", "error_rate stayed above 2.00% for 3s", 3.0, "release", 100)
    with local_slack() as (running, control):
        relay = Relay(redis, settings, WebClient(token="xoxb-local", base_url=running.api_url), name="t",
                      post_interval_s=0.05, update_interval_s=0.1)  # reads what is published from now on
        assert not auto_rollback(ctx, facts, lambda: calls.append(1), _policy())
        def posted() -> str:
            relay.step(block_ms=20)
            return _in_channel(control.transcript("C0DEPLOYS"))
        wait_for(posted, timeout=15, interval=0.01, what="the alert in the channel")
        text = _in_channel(control.transcript("C0DEPLOYS"))
    assert calls == []
    [alert] = [e.data for e in _events(ctx, EventType.OBSERVABILITY_ALERT)]
    assert alert["kind"] == "rollback_pinned" and "Traffic stays on v2, not on the pinned v0" in alert["message"]
    assert "NOT rolled back" in text and "pinned to v0" in text


def _in_channel(rows: list[dict[str, Any]]) -> str:
    """The text of the reply also shown in the channel (a loud alert), or ''."""
    return next((r["text"] for r in rows if r["reply_broadcast"]), "")
