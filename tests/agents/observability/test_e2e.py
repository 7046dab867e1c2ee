"""Canary analysis end to end: real Docker containers behind the nginx edge, a real Prometheus, load.

A service goes live as v1; v2 then walks the canary steps with the observe stage as its judge.
A healthy v2 reaches 100%; a v2 with +5 points of errors or +50% latency is rolled back before
100%; a leaking v2 released with blue-green is rolled back by the watch. Each "why?" names the
metric and the numbers.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from redis import Redis

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.chatops.answers import answer
from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from agents.observability.live import LiveReleases, canary_judge, targets_path
from agents.observability.policy import Policy, default_specs
from agents.observability.stage import run as observe
from orchestra.config import ProjectConfig
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.docker_services import DockerEnv
from tests.support.fault_app import SERVICE
from tests.support.loadgen import background_load
from tests.support.prometheus import PrometheusServer, prometheus_server
from tests.support.services import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PAUSE_S = 15.0
SERVICES = {  # service -> the fault knobs its v2 gets
    "shop-ok": {},
    "shop-errors": {"FAULT_ERROR_RATE": "0.05"},
    "shop-slow": {"FAULT_LATENCY_MS": "15"},  # the baseline p99 is about 30 ms: +50%
    "shop-leak": {"FAULT_LEAK_KB": "64"},
}


@pytest.fixture(scope="module")
def images(docker_env: DockerEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The fault service as images v1 and v2 (same code; the version comes from APP_VERSION)."""
    root = tmp_path_factory.mktemp("fault-images")
    source = root / "fault"
    source.mkdir()
    shutil.copy(SERVICE, source / "app.py")
    settings = Settings(registry=docker_env.registry, base_image=docker_env.base_image)
    client = docker_env.client()
    try:
        return {v: build_service(client, ServiceSpec("fault", source, 8000),
                                 BuildRequest("shop", v, root / "out", Images(python=docker_env.base_image)),
                                 settings=settings) for v in ("v1", "v2")}
    finally:
        client.close()


@pytest.fixture
def client(docker_env: DockerEnv, settings: Settings) -> Iterator[docker.DockerClient]:
    with docker_env.connected(stop_deployed_in=settings.workdir) as client:  # deploys leave edges live
        yield client


@pytest.fixture
def prom(settings: Settings) -> Iterator[PrometheusServer]:
    path = targets_path(settings.workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[]")
    with prometheus_server(targets_file=path) as server:
        yield server


def _config(service: str, faults: dict[str, str]) -> ProjectConfig:
    return ProjectConfig.model_validate({
        "project": {"name": "shop"},
        "deployment": {"strategy": "canary", "canary": {"steps": [25, 100], "analysis_interval": "15s"},
                       "services": [{"name": service, "port": free_port(),  # the edge's port
                                     "env": {"BASE_LATENCY_MS": "20", **faults}}]}})


def _ctx(redis: Redis, settings: Settings, tmp_path: Path, service: str, faults: dict[str, str], *,
         strategy: str) -> AgentContext:
    run = RunStore(redis).create(Run(requested_by="U0CAROL", repo="examples/shop", services=[service],
                                     env="staging", strategy=strategy))
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=tmp_path,
                        config=_config(service, faults), actor="observe")


def _policy(**changes: object) -> Policy:
    values: dict[str, object] = {"specs": default_specs(error_rate=0.2), "window_s": PAUSE_S, "max_wait_s": 0.0,
                                 "min_requests": 30, "breach_s": 4.0, "watch_s": 40.0, "poll_s": 1.0}
    values.update(changes)
    return Policy(**values)  # type: ignore[arg-type]


def _go_live(redis: Redis, settings: Settings, tmp_path: Path, client: docker.DockerClient,
             images: dict[str, Any], service: str) -> str:
    first = _ctx(redis, settings, tmp_path, service, {}, strategy="blue-green")
    result = deploy.run(first, images={service: images["v1"]}, client=client)
    assert result.passed, result.summary
    return str(result.data["live"][service]["url"])


@pytest.mark.parametrize(("service", "promoted", "metric"), [
    ("shop-ok", True, None), ("shop-errors", False, "error_rate"), ("shop-slow", False, "latency_p99")])
def test_canary_is_promoted_or_rolled_back_before_100(redis: Redis, settings: Settings, tmp_path: Path,
                                                      client: docker.DockerClient, images: dict[str, Any],
                                                      prom: PrometheusServer, service: str, promoted: bool,
                                                      metric: str | None) -> None:
    url = _go_live(redis, settings, tmp_path, client, images, service)
    ctx = _ctx(redis, settings, tmp_path, service, SERVICES[service], strategy="canary")
    judge = canary_judge(ctx, prom=prom.client, policy=_policy())
    with background_load(url + "/", seconds=120, rate=60, concurrency=4) as load:
        result = deploy.run(ctx, images={service: images["v2"]}, client=client, judge=judge, pause_s=PAUSE_S)
    assert load.result is not None and load.result.total > 500
    state = get_live(redis, service, "staging")
    assert state is not None and state.current is not None
    judged = [f"{m['metric']}: {m['reason']} n={m['samples']}" for e in ctx.bus.replay(ctx.run.id)
              if e.data.get("kind") == "canary_judgement" for m in e.data["judgement"]["metrics"]]
    shifts = [e.data["weights"] for e in ctx.bus.replay(ctx.run.id)
              if e.type == EventType.DEPLOYMENT_PROGRESS and e.data.get("phase") == "shift"]
    if promoted:
        assert result.passed, judged
        assert state.current.version == "v2" and shifts[-1]["v2"] == 100
        return
    assert not result.passed and state.current.version == "v1", judged
    assert max(w["v2"] for w in shifts) == 25  # never reached 100%
    (rollback,) = [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.ROLLBACK_EVENT]
    assert (rollback["metric"], rollback["from_version"], rollback["to_version"], rollback["step"]) == \
        (metric, "v2", "v1", 1)
    why = answer(Intent(kind=IntentKind.EXPLAIN, service=service, text="why did it roll back?"),
                 redis=redis, settings=settings)
    assert metric in why.text and why.facts["rollback"]["value_text"] in why.text
    assert why.facts["rollback"]["threshold_text"] in why.text and ctx.run.id in why.text


def test_a_leaking_release_is_rolled_back_by_the_watch(redis: Redis, settings: Settings, tmp_path: Path,
                                                       client: docker.DockerClient, images: dict[str, Any],
                                                       prom: PrometheusServer) -> None:
    service = "shop-leak"
    url = _go_live(redis, settings, tmp_path, client, images, service)
    ctx = _ctx(redis, settings, tmp_path, service, SERVICES[service], strategy="blue-green")
    with background_load(url + "/", seconds=90, rate=60, concurrency=4):
        assert deploy.run(ctx, images={service: images["v2"]}, client=client).passed
        result = observe(ctx, source=LiveReleases(client=client), prom=prom.client, policy=_policy())
    assert not result.passed, result.summary
    state = get_live(redis, service, "staging")
    assert state is not None and state.current is not None and state.current.version == "v1"
    (rollback,) = [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.ROLLBACK_EVENT]
    assert (rollback["metric"], rollback["step"], rollback["to_version"]) == ("memory_growth", "release", "v1")
    why = answer(Intent(kind=IntentKind.EXPLAIN, env="staging", text="why did staging roll back?"),
                 redis=redis, settings=settings).text
    assert "memory_growth" in why and "KB/s" in why
