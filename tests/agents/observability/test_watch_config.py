"""What the configuration says about the watch acts: `observability.enabled: false` watches nothing, and
`observability.tools: []` leaves out the releases only Prometheus could watch. Real Redis; the releases come
from a release source that names them, as the deploy agent's would."""
from __future__ import annotations

from pathlib import Path

from redis import Redis

from agents.context import AgentContext
from agents.observability import stage as observe
from agents.observability.policy import Policy, default_specs
from agents.observability.watch import WatchedRelease, load_state
from orchestra.config import ProjectConfig
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

POLICY = Policy(specs=default_specs(), watch_s=30.0)


class _Released:
    def releases(self, ctx: AgentContext) -> list[WatchedRelease]:
        return [WatchedRelease("web", "staging", "v2", "v1")]

    def rollback(self, ctx: AgentContext, release: WatchedRelease) -> None:
        raise AssertionError("nothing is rolled back here")


def _ctx(redis: Redis, settings: Settings, tmp_path: Path, observability: dict[str, object],
         runtime: str = "docker") -> AgentContext:
    config = ProjectConfig.model_validate({"project": {"name": "shop"}, "observability": observability,
                                           "deployment": {"services": [{"name": "web", "runtime": runtime}]}})
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo="shop", services=["web"], env="staging"))
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                        config=config, actor="observe")


def test_observability_disabled_watches_nothing(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path, {"enabled": False})
    result = observe.begin(ctx, source=_Released(), policy=POLICY)
    assert (result.passed, result.later_s) == (True, None)
    assert result.summary == "not watched: observability.enabled is false in devops_orchestra.yaml"
    assert load_state(redis, ctx.run.id) is None


def test_without_prometheus_a_local_release_is_not_watched_and_the_thread_says_so(
        redis: Redis, settings: Settings, tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path, {"tools": []})
    result = observe.begin(ctx, source=_Released(), policy=POLICY)
    assert result.later_s is None and "no prometheus" in result.summary
    said = [e.data["message"] for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.PROGRESS]
    assert said == ["not watching web v2: observability.tools has no prometheus to read their metrics from"]


def test_with_prometheus_the_same_release_is_watched(redis: Redis, settings: Settings, tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path, {"tools": ["prometheus"]})
    result = observe.begin(ctx, source=_Released(), policy=POLICY)
    assert result.later_s == POLICY.poll_s
    state = load_state(redis, ctx.run.id)
    assert state is not None and [r.version for r in state.watched()] == ["v2"]


def test_without_prometheus_an_ecs_release_is_still_watched_on_cloudwatch(
        redis: Redis, settings: Settings, tmp_path: Path) -> None:
    ctx = _ctx(redis, settings, tmp_path, {"tools": []}, runtime="ecs")
    result = observe.begin(ctx, source=_Released(), policy=POLICY)
    assert result.later_s == POLICY.poll_s and load_state(redis, ctx.run.id) is not None
