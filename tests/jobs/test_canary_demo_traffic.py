"""A paced canary in an environment with demo traffic: the pause holds no worker, the router sends the traffic.

The "edge" is the example shop's backend as a real process (real Redis; the live state written with the
deploy target's own state functions). The pause is recorded by the real paced path (:func:`paced.later`),
and the router's driver (:class:`WatchTraffic`) sends requests while the run's deploy stage goes on, from one
router only, and stops when the deploy concludes or the pause's record runs out.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy import paced
from agents.deploy.strategies import Paused
from agents.deploy.targets.state import get_live
from agents.observability.traffic import PACED_KEY, WatchTraffic
from jobs import timers
from orchestra.config import ProjectConfig, load_config
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.agents.observability.test_traffic import backend, go_live, served, settle  # noqa: F401 (fixture)
from tests.jobs.test_canary_scheduled import ENV, Shop, ended, events, images, shop  # noqa: F401 (fixtures)
from tests.support.services import wait_for
from tests.support.shop import SHOP_DIR


def _ctx(redis: Redis, settings: Settings, env: str, config: ProjectConfig) -> AgentContext:
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo="shop", services=["backend"], env=env,
                                     fence={"backend": 1}))
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=SHOP_DIR,
                        config=config)


def test_docker_canaries_with_demo_traffic_are_paced(redis: Redis, settings: Settings) -> None:
    config = load_config(SHOP_DIR)  # production and staging have demo_traffic; the services run on docker
    for env in ("prod", "staging", "development"):
        assert paced.applies(_ctx(redis, settings, env, config), ["backend"]), env
    unfenced = _ctx(redis, settings, "prod", config)
    unfenced.run.fence = {}
    assert not paced.applies(unfenced, ["backend"])  # not admitted with its locks: paused in its job


def test_the_router_drives_a_paused_canarys_traffic_until_the_deploy_concludes(
        redis: Redis, settings: Settings, backend: str) -> None:  # noqa: F811
    config = load_config(SHOP_DIR)  # staging: 5/s to "/"
    ctx = _ctx(redis, settings, "staging", config)
    go_live(redis, backend, env="staging", run_id=ctx.run.id)
    first, second = WatchTraffic(redis, "router-1"), WatchTraffic(redis, "router-2")
    try:
        first.sync([], [ctx.run.id])
        assert first.running == {}  # deploying but not paused: the job sends its own traffic
        result = paced.later(ctx, "backend", Paused(1, 10, 30.0))
        assert result.later_s == 30.0
        assert 30 < redis.ttl(PACED_KEY.format(run_id=ctx.run.id)) <= 90  # the pause, plus a margin
        before = served(backend)
        first.sync([], [ctx.run.id])
        second.sync([], [ctx.run.id])
        assert list(first.running) == [f"deploy:{ctx.run.id}"] and second.running == {}  # one router drives
        time.sleep(2.0)
        first.sync([], [ctx.run.id])
        assert first.running  # still deploying: still driven
        first.sync([], [])  # the deploy stage concluded
        assert first.running == {}
        sent = settle(backend) - before
        assert 5 <= sent <= 14, sent  # 5/s for 2 s, from one router only
        assert settle(backend) == before + sent  # stopped: nothing more

        paced.later(ctx, "backend", Paused(2, 50, 30.0))
        first.sync([], [ctx.run.id])
        assert first.running
        redis.delete(PACED_KEY.format(run_id=ctx.run.id))  # the record ran out (a check that never came)
        first.sync([], [ctx.run.id])
        assert first.running == {}
    finally:
        first.close()
        second.close()


def test_an_environment_without_demo_traffic_records_nothing(redis: Redis, settings: Settings) -> None:
    ctx = _ctx(redis, settings, "development", load_config(SHOP_DIR))
    paced.later(ctx, "backend", Paused(1, 10, 5.0))
    assert redis.get(PACED_KEY.format(run_id=ctx.run.id)) is None
    driver = WatchTraffic(redis, "router-1")
    driver.sync([], [ctx.run.id])
    assert driver.running == {}


@pytest.mark.docker
def test_with_demo_traffic_and_one_worker_another_run_starts_during_the_pause(
        shop: Callable[..., Shop], redis: Redis) -> None:  # noqa: F811
    """Real dockerd, nginx edges, router thread and one `orchestra worker`: the canary's pause holds no worker
    and its demo traffic is answered by the edge (both shares) while no job runs."""
    s = shop(["api", "web"], pause="3s")
    config = s.repo / "devops_orchestra.yaml"
    config.write_text(config.read_text() + "environments:\n  staging:\n    demo_traffic: {rps: 20}\n")
    s.worker()
    a = s.deploy("api", "v2")
    wait_for(lambda: timers.pending(redis, a, "deploy"), timeout=30, interval=0.02, what="the canary's first pause")
    router = s.thread._target.__self__  # type: ignore[attr-defined]  # the router thread's own driver
    requested = time.time()
    b = s.deploy("web", "v2", strategy="blue-green")
    wait_for(lambda: events(redis, b, EventType.STAGE_STARTED), timeout=10, interval=0.02, what="b's first stage")
    waited = events(redis, b, EventType.STAGE_STARTED)[0].ts - requested
    live = get_live(redis, "api", ENV)
    assert live is not None and live.weights.get("v2") in (10, 50), live  # a was still in its canary
    driven: Any = wait_for(lambda: router.watch_traffic.running.get(f"deploy:{a}"), timeout=5, interval=0.05,
                      what="the router driving a's demo traffic")
    wait_for(lambda: sum(driven.statuses.values()) >= 10, timeout=5, interval=0.05, what="answers during the pause")
    print(f"b's first stage started {waited:.2f}s after its request; a's pause traffic: {dict(driven.statuses)}")
    assert waited < 2.0
    assert set(driven.statuses) == {200}
    assert ended(redis, a).status == RunStatus.SUCCEEDED
    assert ended(redis, b).status == RunStatus.SUCCEEDED
    wait_for(lambda: f"deploy:{a}" not in router.watch_traffic.running, timeout=5, interval=0.05,
             what="a's pause traffic to stop once its deploy concluded")
    assert driven.stop.is_set()
