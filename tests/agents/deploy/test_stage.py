"""The deploy agent against a real Docker engine, registry and nginx: blue-green, canary, rollback."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from redis import Redis

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.strategies import TrafficStep
from agents.deploy.targets.docker import LABEL
from agents.deploy.targets.state import get_live
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.locks import Locks
from orchestra.settings import Settings
from orchestra.store import Run
from tests.support.docker_services import DockerEnv
from tests.support.sample_apps import plain_app, sample_repo

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def images(docker_env: DockerEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Images of tiny services: api v1/v2, backend v1/v2, frontend v1 and a v2 that crashes."""
    root = tmp_path_factory.mktemp("images")
    settings = Settings(registry=docker_env.registry, base_image=docker_env.base_image)
    built = {}
    client = docker_env.client()
    for service, version, crash in [("api", "v1", False), ("api", "v2", False), ("backend", "v1", False),
                                    ("backend", "v2", False), ("frontend", "v1", False),
                                    ("frontend", "v2", True)]:
        path = plain_app(root / f"{service}-{version}", marker=version, crash=crash)
        request = BuildRequest("shop", version, root / "out", Images(python=docker_env.base_image))
        built[f"{service}:{version}"] = build_service(client, ServiceSpec(service, path, 8000), request,
                                                      settings=settings)
    client.close()
    return built


@pytest.fixture
def client(docker_env: DockerEnv, settings: Settings) -> Iterator[docker.DockerClient]:
    with docker_env.connected(stop_deployed_in=settings.workdir) as client:  # deploys leave edges live
        yield client


@pytest.fixture
def make_ctx(tmp_path: Path, settings: Settings, redis: Redis) -> Any:
    repo = sample_repo(tmp_path / "repo", {"api": [], "backend": [], "frontend": ["backend"]})
    config = load_config(repo)

    def make(services: list[str], *, strategy: str | None = None) -> AgentContext:
        run = Run(requested_by="U0ALICE", repo=str(repo), services=services, env="staging", strategy=strategy)
        return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                            config=config, actor="deploy")
    return make


def _pick(images: dict[str, dict[str, Any]], *keys: str) -> dict[str, dict[str, Any]]:
    return {key.split(":")[0]: images[key] for key in keys}


def _version(url: str) -> str:
    with urllib.request.urlopen(url + "/", timeout=5) as response:
        return str(json.loads(response.read())["version"])


def _versions(url: str, n: int = 20) -> Counter[str]:
    return Counter(_version(url) for _ in range(n))


class Load:
    """A bounded request loop on fresh connections, counting answers per version and failures."""

    def __init__(self, url: str, *, max_requests: int = 5000, max_s: float = 60) -> None:
        self.url, self.max_requests, self.max_s = url, max_requests, max_s
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self.stop.is_set() and time.monotonic() < deadline and self.total < self.max_requests:
            try:
                self.seen[_version(self.url)] += 1
            except Exception as exc:  # every failure is counted and reported
                self.failures.append(repr(exc))

    @property
    def total(self) -> int:
        return sum(self.seen.values()) + len(self.failures)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        target = self.total + 300  # keep going for 300 more requests after the switch
        while self.thread.is_alive() and self.total < target:
            time.sleep(0.01)
        self.stop.set()
        self.thread.join(timeout=30)


def _events(redis: Redis, run_id: str, kind: EventType) -> list[dict[str, Any]]:
    return [e.data for e in EventBus(redis).replay(run_id) if e.type == kind]


def test_blue_green_switch_under_load_loses_no_request(make_ctx: Any, images: dict[str, Any],
                                                       client: docker.DockerClient, redis: Redis) -> None:
    first = deploy.run(make_ctx(["api"]), images=_pick(images, "api:v1"), client=client)
    assert first.passed, first.summary
    url = first.data["live"]["api"]["url"]
    assert _versions(url) == Counter({"v1": 20})

    ctx = make_ctx(["api"])
    with Load(url) as load:
        while load.total < 100:  # traffic is flowing before the switch starts
            time.sleep(0.01)
        second = deploy.run(ctx, images=_pick(images, "api:v2"), client=client)
    assert second.passed, second.summary
    assert load.failures == [] and load.total >= 300
    assert load.seen["v1"] > 0 and load.seen["v2"] >= 300
    assert _versions(url) == Counter({"v2": 20})

    triggered = _events(redis, ctx.run.id, EventType.DEPLOYMENT_TRIGGERED)
    assert [(t["version"], t["from_version"], t["strategy"]) for t in triggered] == [("v2", "v1", "blue-green")]
    shifts = [p for p in _events(redis, ctx.run.id, EventType.DEPLOYMENT_PROGRESS) if p["phase"] == "shift"]
    assert shifts[-1]["weights"] == {"v2": 100, "v1": 0}
    state = get_live(redis, "api", "staging")
    assert state and state.current and state.previous
    assert (state.current.version, state.previous.version) == ("v2", "v1")
    assert client.containers.get(state.previous.container).status == "running"  # kept for rollback


def test_canary_walks_the_configured_steps_to_100_asking_the_judge(
        make_ctx: Any, images: dict[str, Any], client: docker.DockerClient, redis: Redis) -> None:
    assert deploy.run(make_ctx(["api"]), images=_pick(images, "api:v1"), client=client).passed
    asked: list[tuple[int, int]] = []
    split: dict[int, Counter[str]] = {}
    ctx = make_ctx(["api"], strategy="canary")
    live = get_live(redis, "api", "staging")
    assert live is not None and live.current is not None
    url, v1_port = live.url, live.current.port

    def judge(traffic: TrafficStep) -> str:
        step, weight = traffic.step, traffic.weight
        asked.append((step, weight))
        assert (traffic.service, traffic.env, traffic.new.version, traffic.pause_s) == ("api", "staging", "v2", 0)
        assert traffic.old is not None and (traffic.old.version, traffic.old.port) == ("v1", v1_port)
        assert get_live(redis, "api", "staging").weights == {"v2": weight, "v1": 100 - weight}  # type: ignore[union-attr]
        split[weight] = _versions(url, 100)
        return "pass"

    result = deploy.run(ctx, images=_pick(images, "api:v2"), client=client, judge=judge, pause_s=0)
    assert result.passed, result.summary
    assert asked == [(1, 10), (2, 50)]
    assert split[10] == Counter({"v1": 90, "v2": 10}) and split[50] == Counter({"v1": 50, "v2": 50})
    weights = [p["weights"]["v2"] for p in _events(redis, ctx.run.id, EventType.DEPLOYMENT_PROGRESS)
               if p["phase"] == "shift"]
    assert weights == [10, 50, 100]
    assert _versions(url) == Counter({"v2": 20})
    assert result.data["versions"] == {"api": "v2"} and result.data["env"] == "staging"
    assert result.data["verdicts"]["api"] == [{"step": 1, "weight": 10, "verdict": "pass"},
                                              {"step": 2, "weight": 50, "verdict": "pass"}]


def test_a_failed_canary_step_puts_all_traffic_back(make_ctx: Any, images: dict[str, Any],
                                                   client: docker.DockerClient, redis: Redis) -> None:
    assert deploy.run(make_ctx(["api"]), images=_pick(images, "api:v1"), client=client).passed
    verdicts = iter(["inconclusive", "fail"])
    result = deploy.run(make_ctx(["api"], strategy="canary"), images=_pick(images, "api:v2"), client=client,
                        judge=lambda step: next(verdicts), pause_s=0)
    assert not result.passed and "judged fail" in result.summary
    state = get_live(redis, "api", "staging")
    assert state and state.current and state.current.version == "v1" and state.weights == {"v1": 100}
    assert _versions(state.url) == Counter({"v1": 20})
    assert [c.name for c in client.containers.list(filters={"label": LABEL})] == [state.current.container]


def test_rollback_restores_the_old_version_within_seconds_and_is_idempotent(
        make_ctx: Any, images: dict[str, Any], client: docker.DockerClient, redis: Redis) -> None:
    assert deploy.run(make_ctx(["api"]), images=_pick(images, "api:v1"), client=client).passed
    assert deploy.run(make_ctx(["api"]), images=_pick(images, "api:v2"), client=client).passed
    url = get_live(redis, "api", "staging").url  # type: ignore[union-attr]

    ctx = make_ctx(["api"])
    started = time.monotonic()
    back = deploy.rollback(ctx, "api", client=client)
    elapsed = time.monotonic() - started
    assert back.passed and back.data["changed"] and elapsed < 5, (back.summary, elapsed)
    assert (back.data["from_version"], back.data["to_version"]) == ("v2", "v1")
    assert _versions(url) == Counter({"v1": 20})
    assert _events(redis, ctx.run.id, EventType.ROLLBACK_EVENT)[0]["to_version"] == "v1"

    again = deploy.rollback(make_ctx(["api"]), "api", client=client)
    assert again.passed and not again.data["changed"] and "already on v1" in again.summary
    assert _versions(url) == Counter({"v1": 20})

    forward = deploy.rollback(make_ctx(["api"]), "api", to_version="v2", client=client)
    assert forward.data["changed"] and _versions(url) == Counter({"v2": 20})


def test_a_rollback_to_a_version_named_by_its_ref_finds_the_release_deployed_from_it(
        make_ctx: Any, images: dict[str, Any], client: docker.DockerClient, redis: Redis) -> None:
    main, hotfix = {**images["api:v1"], "ref": "main"}, {**images["api:v2"], "ref": "hotfix-v2"}
    assert deploy.run(make_ctx(["api"]), images={"api": main}, client=client).passed
    ctx = make_ctx(["api"])
    assert deploy.run(ctx, images={"api": hotfix}, client=client).passed
    (triggered,) = _events(redis, ctx.run.id, EventType.DEPLOYMENT_TRIGGERED)
    assert [triggered[k] for k in ("version", "ref", "from_version", "from_ref")] == ["v2", "hotfix-v2", "v1", "main"]
    state = get_live(redis, "api", "staging")
    assert state and state.current and (state.current.version, state.current.ref) == ("v2", "hotfix-v2")

    ctx = make_ctx(["api"])
    back = deploy.rollback(ctx, "api", to_version="main", client=client)
    assert back.passed and back.data["changed"], back.summary
    assert (back.data["from_version"], back.data["from_ref"]) == ("v2", "hotfix-v2")
    assert (back.data["to_version"], back.data["to_ref"]) == ("v1", "main")
    assert "back on v1 (main)" in back.summary and _versions(state.url) == Counter({"v1": 20})
    assert _events(redis, ctx.run.id, EventType.ROLLBACK_EVENT)[0]["to_ref"] == "main"
    again = deploy.rollback(make_ctx(["api"]), "api", to_version="main", client=client)
    assert not again.data["changed"] and "already on v1 (main)" in again.summary


def test_a_held_lock_names_its_holder(make_ctx: Any, images: dict[str, Any], client: docker.DockerClient,
                                      redis: Redis) -> None:
    Locks(redis).acquire("api", "staging", owner="U0BOB", run_id="r-other")
    result = deploy.run(make_ctx(["api"]), images=_pick(images, "api:v1"), client=client)
    assert not result.passed and "U0BOB" in result.summary and "r-other" in result.summary
    assert client.containers.list(filters={"label": LABEL}) == []


def test_a_failure_rolls_the_group_back_in_reverse_order(make_ctx: Any, images: dict[str, Any],
                                                         client: docker.DockerClient, redis: Redis) -> None:
    group = ["frontend", "backend"]
    assert deploy.run(make_ctx(group), images=_pick(images, "backend:v1", "frontend:v1"), client=client).passed
    ctx = make_ctx(group)
    result = deploy.run(ctx, images=_pick(images, "backend:v2", "frontend:v2"), client=client)
    assert not result.passed and result.data["failed"] == "frontend"
    assert result.data["rolled_back"] == ["backend"]
    for service in group:
        state = get_live(redis, service, "staging")
        assert state and state.current and state.current.version == "v1"
        assert _versions(state.url, 5) == Counter({"v1": 5})
    triggered = [t["service"] for t in _events(redis, ctx.run.id, EventType.DEPLOYMENT_TRIGGERED)]
    assert triggered == ["backend", "frontend"]  # depends_on order
    assert [r["service"] for r in _events(redis, ctx.run.id, EventType.ROLLBACK_EVENT)] == ["backend"]
    assert Locks(redis).holder("backend", "staging") is None


def test_the_frontend_is_told_where_its_backend_lives(make_ctx: Any, images: dict[str, Any],
                                                      client: docker.DockerClient, redis: Redis) -> None:
    assert deploy.run(make_ctx(["frontend", "backend"]), images=_pick(images, "backend:v1", "frontend:v1"),
                      client=client).passed
    backend, frontend = get_live(redis, "backend", "staging"), get_live(redis, "frontend", "staging")
    assert backend and frontend and frontend.current
    env = client.containers.get(frontend.current.container).attrs["Config"]["Env"]
    assert f"BACKEND_URL={backend.url}" in env


def test_after_the_keep_window_the_old_release_stops_and_rollback_still_brings_it_back(
        make_ctx: Any, images: dict[str, Any], client: docker.DockerClient, redis: Redis,
        settings: Settings) -> None:
    from agents.deploy.targets.local import LocalTarget

    assert deploy.run(make_ctx(["api"]), images=_pick(images, "api:v1"), client=client).passed
    assert deploy.run(make_ctx(["api"]), images=_pick(images, "api:v2"), client=client).passed
    state = get_live(redis, "api", "staging")
    assert state and state.previous and state.previous.keep_until
    target = LocalTarget(client, redis, settings.workdir)
    assert target.reap(now=state.previous.keep_until - 1) == []
    assert target.reap(now=state.previous.keep_until + 1) == [state.previous.container]
    assert client.containers.get(state.previous.container).status == "exited"

    back = deploy.rollback(make_ctx(["api"]), "api", client=client)
    assert back.passed and back.data["seconds"] < 10
    assert _versions(state.url) == Counter({"v1": 20})


def test_a_release_that_crashes_at_start_fails_with_its_log(make_ctx: Any, images: dict[str, Any],
                                                            client: docker.DockerClient, redis: Redis) -> None:
    started = time.monotonic()
    result = deploy.run(make_ctx(["frontend"]), images=_pick(images, "frontend:v2"), client=client)
    assert not result.passed and "crashes at start" in result.data["error"]
    assert get_live(redis, "frontend", "staging") is None
    assert time.monotonic() - started < 20
    assert client.containers.list(all=True, filters={"label": LABEL}) == []


def test_rolling_moves_traffic_in_even_steps(make_ctx: Any, images: dict[str, Any],
                                             client: docker.DockerClient, redis: Redis) -> None:
    assert deploy.run(make_ctx(["api"]), images=_pick(images, "api:v1"), client=client).passed
    ctx = make_ctx(["api"], strategy="rolling")
    assert deploy.run(ctx, images=_pick(images, "api:v2"), client=client).passed
    weights = [p["weights"] for p in _events(redis, ctx.run.id, EventType.DEPLOYMENT_PROGRESS)
               if p["phase"] == "shift"]
    assert weights == [{"v2": w, "v1": 100 - w} for w in (25, 50, 75, 100)]


def test_a_service_without_an_image_is_refused(make_ctx: Any, images: dict[str, Any],
                                               client: docker.DockerClient) -> None:
    result = deploy.run(make_ctx(["api", "backend"]), images=_pick(images, "api:v1"), client=client)
    assert not result.passed and "backend" in result.summary
    assert client.containers.list(all=True, filters={"label": LABEL}) == []
