"""The observe stage against real processes, a real Prometheus and a real Redis.

One baseline and several canaries of the same service run side by side under load;
each test judges a canary against the baseline, or watches a release.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.chatops.answers import answer
from agents.context import AgentContext
from agents.observability.canary import CanaryStep, analyze_step
from agents.observability.judge import Verdict
from agents.observability.policy import Policy, default_specs
from agents.observability.stage import run
from agents.observability.watch import WatchedRelease
from orchestra.config import ProjectConfig
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.fleet import Fleet, fleet

pytestmark = pytest.mark.slow

VERSIONS = {
    "v1": {"base_latency_ms": 20},  # the baseline
    "v2-ok": {"base_latency_ms": 20},
    "v2-errors": {"base_latency_ms": 20, "error_rate": 0.05},  # +5 points of errors
    "v2-slow": {"base_latency_ms": 20, "latency_ms": 15},  # +50% of the baseline p99 (about 30 ms)
    "v2-leak": {"base_latency_ms": 20, "leak_kb": 32},
    "v2-idle": {"base_latency_ms": 20},  # gets no traffic
}
WINDOW_S = 20.0


@pytest.fixture(scope="module")
def shop() -> Iterator[Fleet]:
    with fleet(VERSIONS, idle=("v2-idle",)) as running:
        yield running


def _policy(**changes: object) -> Policy:
    values: dict[str, object] = {"specs": default_specs(), "window_s": WINDOW_S, "max_wait_s": 0.0,
                                 "watch_s": 8.0, "breach_s": 3.0, "poll_s": 1.0, "max_rollbacks_per_hour": 3,
                                 "min_requests": 50}
    values.update(changes)
    return Policy(**values)  # type: ignore[arg-type]


def _ctx(redis: Redis, settings: Settings, tmp_path: Path, *, user: str = "alice") -> AgentContext:
    config = ProjectConfig.model_validate({"project": {"name": "shop"},
                                           "deployment": {"services": [{"name": "backend"}]}})
    run = RunStore(redis).create(Run(requested_by=user, repo="examples/shop", services=["backend"],
                                     env="staging", strategy="canary"))
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                        config=config, actor="observe")


def _step(shop: Fleet, canary: str, *, step: int = 1, weight: int = 10) -> CanaryStep:
    return CanaryStep("backend", "staging", "v1", canary, step, weight, started_at=shop.load_started)


@pytest.mark.parametrize(("canary", "verdict", "culprit"), [
    ("v2-ok", Verdict.PASS, None),
    ("v2-errors", Verdict.FAIL, "error_rate"),
    ("v2-slow", Verdict.FAIL, "latency_p99"),
    ("v2-leak", Verdict.FAIL, "memory_growth"),
    ("v2-idle", Verdict.INCONCLUSIVE, None),
])
def test_canary_verdicts(shop: Fleet, redis: Redis, settings: Settings, tmp_path: Path, canary: str,
                         verdict: Verdict, culprit: str | None) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    rolled: list[str] = []
    judgement = analyze_step(ctx, _step(shop, canary), prom=shop.prom.client, policy=_policy(),
                             rollback=lambda: rolled.append(canary))
    assert judgement.verdict == verdict, judgement.reason
    assert (judgement.culprit.metric if judgement.culprit else None) == culprit, judgement.reason
    assert rolled == ([canary] if verdict == Verdict.FAIL else [])
    if canary == "v2-idle":
        assert "not enough traffic" in judgement.reason


def test_failed_canary_is_rolled_back_and_explained(shop: Fleet, redis: Redis, settings: Settings,
                                                     tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path, user="carol")
    analyze_step(ctx, _step(shop, "v2-errors", step=1, weight=10), prom=shop.prom.client, policy=_policy(),
                 rollback=lambda: None)
    events = ctx.bus.replay(ctx.run.id)
    (rollback,) = [e for e in events if e.type == EventType.ROLLBACK_EVENT]
    d = rollback.data
    assert (d["metric"], d["from_version"], d["to_version"], d["step"], d["weight"]) == \
        ("error_rate", "v2-errors", "v1", 1, 10)
    assert 0.02 < d["value"] < 0.10 and d["threshold"] < d["value"] and d["window_s"] >= WINDOW_S
    text = answer(Intent(kind=IntentKind.EXPLAIN, env="staging", text="why did staging roll back?"),
                  redis=redis, settings=settings).text
    assert ctx.run.id in text and "error_rate" in text and "carol" in text
    assert f"{d['value'] * 100:.2f}%" in text and f"{d['threshold'] * 100:.2f}%" in text


def test_circuit_breaker_stops_repeated_rollbacks_and_says_so(shop: Fleet, redis: Redis, settings: Settings,
                                                              tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    rolled: list[int] = []
    for attempt in range(3):
        analyze_step(ctx, _step(shop, "v2-errors"), prom=shop.prom.client,
                     policy=_policy(max_rollbacks_per_hour=2), rollback=lambda a=attempt: rolled.append(a))
    assert rolled == [0, 1]
    alerts = [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.OBSERVABILITY_ALERT]
    (open_alert,) = [a for a in alerts if a.get("kind") == "circuit_breaker_open"]
    assert "circuit breaker open" in open_alert["message"] and open_alert["rollbacks_last_hour"] == 2


class _Source:
    """The deploy agent's side of the watch, as the test sees it: what went live, and a rollback."""

    def __init__(self, release: WatchedRelease) -> None:
        self.release = release
        self.rolled_back: list[WatchedRelease] = []

    def releases(self, ctx: AgentContext) -> list[WatchedRelease]:
        return [self.release]

    def rollback(self, ctx: AgentContext, release: WatchedRelease) -> None:
        self.rolled_back.append(release)


@pytest.mark.parametrize(("version", "metric"), [("v2-errors", "error_rate"), ("v2-leak", "memory_growth")])
def test_release_breaching_a_threshold_is_rolled_back(shop: Fleet, redis: Redis, settings: Settings,
                                                     tmp_path: Path, version: str, metric: str) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    source = _Source(WatchedRelease("backend", "staging", version, "v1"))
    specs = default_specs(error_rate=0.02)
    started = time.monotonic()
    result = run(ctx, source=source, prom=shop.prom.client, policy=_policy(specs=specs, watch_s=30.0))
    assert not result.passed and source.rolled_back == [source.release]
    assert time.monotonic() - started < 15
    (event,) = [e for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.ROLLBACK_EVENT]
    assert (event.data["metric"], event.data["step"], event.data["to_version"]) == (metric, "release", "v1")
    assert event.data["value"] > event.data["threshold"] and event.data["window_s"] >= 3


def test_healthy_release_passes_the_watch_and_alerts_once(shop: Fleet, redis: Redis, settings: Settings,
                                                          tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    source = _Source(WatchedRelease("backend", "staging", "v2-ok", "v1"))
    result = run(ctx, source=source, prom=shop.prom.client,
                 policy=_policy(watch_s=4.0, alerts={"latency_p99": 0.001}))
    assert result.passed, result.summary
    assert source.rolled_back == []
    alerts = [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.OBSERVABILITY_ALERT]
    assert [(a["kind"], a["metric"]) for a in alerts] == [("threshold_alert", "latency_p99")]
