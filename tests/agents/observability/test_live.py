"""The observe stage's wiring to the deploy target, without Docker: targets, versions, Prometheus down."""
from __future__ import annotations

import json
from pathlib import Path

from redis import Redis

from agents.context import AgentContext
from agents.deploy.strategies import TrafficStep
from agents.deploy.targets.state import LiveState, Release, set_live
from agents.observability.breaker import RollbackBreaker
from agents.observability.live import canary_judge, deploy_judge, live_targets, step_targets, sync_targets
from agents.observability.metrics import Prometheus
from agents.observability.stage import run
from agents.observability.watch import WatchedRelease
from orchestra.config import ProjectConfig
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.services import free_port


def _ctx(redis: Redis, settings: Settings, tmp_path: Path) -> AgentContext:
    config = ProjectConfig.model_validate({"project": {"name": "shop"},
                                           "deployment": {"services": [{"name": "backend"}]}})
    run = RunStore(redis).create(Run(requested_by="alice", repo="r", services=["backend"], env="staging"))
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                        config=config, actor="observe")


def _release(version: str, port: int, run_id: str) -> Release:
    return Release(version=version, image=f"reg/backend:{version}", port=port, container=f"c-{version}",
                   run_id=run_id)


def _step(ctx: AgentContext) -> TrafficStep:
    """Step 1 of a canary of backend v2 (10 %) against v1, as the deploy agent's strategy asks it."""
    return TrafficStep("backend", "staging", new=_release("v2", 41001, ctx.run.id),
                       old=_release("v1", 41000, ctx.run.id), step=1, weight=10, pause_s=5.0)


def test_targets_come_from_live_state_and_the_step_being_judged(redis: Redis, settings: Settings,
                                                                tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    set_live(redis, LiveState(service="backend", env="staging", edge_port=5000, edge_prefix="/tmp/e",
                              current=_release("v1", 41000, ctx.run.id), weights={"v1": 100}))
    canary = step_targets(_step(ctx))
    assert [(t.address, t.version) for t in live_targets(ctx)] == [("127.0.0.1:41000", "v1")]
    assert [(t.address, t.version) for t in live_targets(ctx, canary)] == [("127.0.0.1:41000", "v1"),
                                                                           ("127.0.0.1:41001", "v2")]
    path = tmp_path / "targets.json"
    assert sync_targets(ctx, path, extra=canary) is True and sync_targets(ctx, path, extra=canary) is False
    groups = json.loads(path.read_text())
    assert groups[1] == {"targets": ["127.0.0.1:41001"], "labels": {
        "service": "backend", "version": "v2", "env": "staging", "__metrics_path__": "/metrics"}}


def test_prometheus_out_of_reach_is_inconclusive_and_says_so(redis: Redis, settings: Settings,
                                                              tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    judge = canary_judge(ctx, prom=Prometheus(url, timeout=1), targets_file=tmp_path / "t.json")
    assert judge(_step(ctx)) == "inconclusive"  # scraping starts
    assert judge(_step(ctx)) == "inconclusive"  # Prometheus cannot be asked: never a pass
    events = ctx.bus.replay(ctx.run.id)
    (scraping,) = [e.data for e in events if e.data.get("kind") == "canary_scrape_started"]
    assert (scraping["service"], scraping["step"]) == ("backend", 1) and "backend v2" in scraping["message"]
    alerts = [e.data for e in events if e.type == EventType.OBSERVABILITY_ALERT]
    assert alerts[-1]["kind"] == "metrics_unavailable" and url in alerts[-1]["message"]


class _Source:
    def releases(self, ctx: AgentContext) -> list[WatchedRelease]:
        return [WatchedRelease("backend", "staging", "v2", "v1")]

    def rollback(self, ctx: AgentContext, release: WatchedRelease) -> None:
        raise AssertionError("nothing to roll back without metrics")


def test_the_watch_without_prometheus_fails_with_the_reason(redis: Redis, settings: Settings,
                                                            tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    result = run(ctx, source=_Source(), prom=Prometheus(url, timeout=1))
    assert not result.passed and f"cannot reach Prometheus at {url}" in result.summary
    assert "ORCHESTRA_PROMETHEUS_URL" in result.data["hint"]


def test_nothing_released_nothing_to_watch(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    class Empty(_Source):
        def releases(self, ctx: AgentContext) -> list[WatchedRelease]:
            return []

    result = run(_ctx(redis, settings, tmp_path), source=Empty())
    assert result.passed and "nothing to watch" in result.summary


def test_the_deploy_stage_gets_a_metrics_judge_only_when_metrics_are_watched(redis: Redis, settings: Settings,
                                                                              tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path)
    assert deploy_judge(ctx) is not None
    off = ProjectConfig.model_validate({"project": {"name": "shop"}, "observability": {"tools": []},
                                        "deployment": {"services": [{"name": "backend"}]}})
    ctx.config = off
    assert deploy_judge(ctx) is None


def test_breaker_counts_a_sliding_hour_per_service_and_environment(redis: Redis) -> None:
    breaker = RollbackBreaker(redis, limit=2)
    assert breaker.allows("backend", "production", now=1000.0)
    breaker.record("backend", "production", now=1000.0)
    breaker.record("backend", "production", now=2000.0)
    assert not breaker.allows("backend", "production", now=2500.0)
    assert breaker.reopens_at("backend", "production", now=2500.0) == 4600.0
    assert breaker.reopens_at("backend", "staging", now=2500.0) is None
    assert breaker.allows("backend", "staging", now=2500.0) and breaker.allows("frontend", "production", now=2500.0)
    assert breaker.recent("backend", "production", now=4601.0) == 1  # the first left the hour
    assert breaker.allows("backend", "production", now=4601.0)
