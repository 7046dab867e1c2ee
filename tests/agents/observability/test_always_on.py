"""The always-on watch end to end: real Docker containers behind the nginx edge, a real Prometheus, real
RQ jobs fired by the real timers (and, for the kill, a real `orchestra worker` process).

Time is scaled down: the watch lasts 3 s, the always-on watch looks every 5 s (the shortest interval the
configuration accepts), a limit exceeded at one look is acted on (``rollback.threshold.duration: 0s``), and
"twenty minutes later" is "after the watch passed". The service leaks 64 KB per request, so it leaks only
when it gets traffic: quiet during its watch, leaking once the load starts.
"""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import pytest
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.chatops.answers import answer
from agents.context import AgentContext
from agents.deploy import stage as deploy
from agents.deploy.targets.state import get_live
from agents.observability import always_on
from agents.observability.live import LiveReleases, targets_path
from agents.observability.policy import policy_for
from agents.observability.stage import run as observe
from jobs import runner, timers, workspace
from jobs.graph import PIPELINE
from jobs.queue import stage_queue
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import Locks
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.docker_services import DockerEnv
from tests.support.fault_app import SERVICE
from tests.support.loadgen import background_load
from tests.support.processes import kill_tree
from tests.support.prometheus import PrometheusServer, prometheus_server
from tests.support.services import free_port, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME = "shop-leak"
KEY = f"{NAME}:staging"


@pytest.fixture(scope="module")
def images(docker_env: DockerEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The fault service as images v1 and v2 (same code; the version comes from APP_VERSION)."""
    root = tmp_path_factory.mktemp("always-on-images")
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
def prom(settings: Settings) -> Iterator[PrometheusServer]:
    path = targets_path(settings.workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[]")
    with prometheus_server(targets_file=path) as server:
        yield server


@dataclass
class Shop:
    """A repository whose devops_orchestra.yaml the checks read, deploys of it, and the timers driven."""

    redis: Redis
    settings: Settings
    client: docker.DockerClient
    images: dict[str, Any]
    repo: Path

    def deploy(self, version: str, *, run: Run | None = None) -> AgentContext:
        run = run or RunStore(self.redis).create(Run(requested_by="U0CAROL", repo=str(self.repo), services=[NAME],
                                                     env="staging", strategy="blue-green"))
        src, config = workspace.prepare(run, self.settings, redis=self.redis)
        ctx = AgentContext(run=run, settings=self.settings, redis=self.redis, bus=EventBus(self.redis),
                           workspace=src, config=config, actor="deploy")
        result = deploy.run(ctx, images={NAME: self.images[version]}, client=self.client)
        assert result.passed, result.summary
        return ctx

    def watch(self, ctx: AgentContext) -> None:
        """The run's own watch (3 s, quiet): it passes."""
        result = observe(ctx, source=LiveReleases(client=self.client), policy=policy_for(ctx))
        assert result.passed, result.summary

    def drive(self, until: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Fire due timers and run their check jobs in this process until ``until()`` is true."""
        queue = stage_queue(self.redis)
        worker = SimpleWorker([queue], connection=self.redis, serializer=JSONSerializer)
        runner.configure(self.settings)

        def step() -> Any:
            timers.fire_due(self.redis, queue, PIPELINE)
            worker.work(burst=True)
            return until()
        return wait_for(step, timeout=timeout, interval=0.5, what=what)

    def live_version(self) -> str | None:
        state = get_live(self.redis, NAME, "staging")
        return state.current.version if state and state.current else None

    def url(self) -> str:
        state = get_live(self.redis, NAME, "staging")
        assert state is not None
        return state.url

    def events(self, ctx: AgentContext, kind: str | None = None) -> list[Any]:
        return [e for e in ctx.bus.replay(ctx.run.id) if kind is None or e.data.get("kind") == kind]

    def looks(self) -> int:
        state = always_on.load(self.redis, NAME, "staging")
        return state.looks if state else 0


def _repo(root: Path, *, guard: str, per_hour: int = 3, always_on: str = "true") -> Path:
    repo = root / "shop"
    repo.mkdir()
    (repo / "devops_orchestra.yaml").write_text(f"""\
project: {{name: shop}}
deployment:
  strategy: blue-green
  services:
    - name: {NAME}
      port: {free_port()}
      env: {{BASE_LATENCY_MS: "20", FAULT_LEAK_KB: "64"}}
rollback:
  threshold: {{duration: 0s, error_rate: 20}}
  max_automatic_per_hour: {per_hour}
observability:
  watch: 3s
  interval: 5s
  guard: {guard}
  always_on: {always_on}
""")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "shop"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    return repo


@pytest.fixture
def shop(redis: Redis, settings: Settings, docker_env: DockerEnv, prom: PrometheusServer, tmp_path: Path,
         images: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Shop]:
    options = getattr(request, "param", {"guard": "1h"})
    settings = settings.with_(docker_host=docker_env.url, prometheus_url=prom.url)
    with docker_env.connected(stop_deployed_in=settings.workdir) as client:
        yield Shop(redis, settings, client, images, _repo(tmp_path, **options))


def test_a_release_that_starts_leaking_after_its_watch_is_rolled_back_by_the_always_on_watch(shop: Shop) -> None:
    shop.deploy("v1")
    ctx = shop.deploy("v2")
    shop.watch(ctx)  # the watch is over: v2 looked healthy while nobody used it
    shop.drive(lambda: shop.looks() >= 1, timeout=15, what="the always-on watch to look at v2")
    assert shop.live_version() == "v2" and not shop.events(ctx, "always_on_anomaly")
    with background_load(shop.url() + "/", seconds=40, rate=60, concurrency=4):  # the leak begins
        shop.drive(lambda: shop.live_version() == "v1", timeout=25, what="the always-on rollback to v1")
    (alert,) = shop.events(ctx, "always_on_anomaly")
    data = alert.data
    assert (data["metric"], data["version"], data["previous_version"], data["action"]) == \
        ("memory_growth", "v2", "v1", "rollback")
    assert data["value"] > data["threshold"] and data["crash"] is not None
    assert "rolling back to v1" in data["message"] and "KB/s" in data["message"]
    (rollback,) = [e.data for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.ROLLBACK_EVENT]
    assert (rollback["from_version"], rollback["to_version"], rollback["automatic"]) == ("v2", "v1", True)
    assert Locks(shop.redis).holder(NAME, "staging") is None  # the rollback's lock was given back
    why = answer(Intent(kind=IntentKind.EXPLAIN, env="staging", text="why did staging roll back?"),
                 redis=shop.redis, settings=shop.settings).text
    assert "memory_growth" in why and "always-on" in why and ctx.run.id in why


@pytest.mark.parametrize("shop", [{"guard": "1h", "always_on": "false"}], indirect=True)
def test_always_on_false_leaves_the_release_unchecked(shop: Shop) -> None:
    shop.deploy("v1")
    member = f"{timers.ALWAYS_ON}:{KEY}"
    shop.drive(lambda: shop.redis.hget(timers.LAST_CHECK_KEY, member) is None
               and shop.redis.hget(always_on.ENROLLED_KEY, KEY) == b"v1", timeout=10, what="the one check")
    time.sleep(timers.ENROL_EVERY_S + 0.5)  # the next enrolment does not give it a timer again
    shop.drive(lambda: True, timeout=5, what="the timers")
    assert shop.redis.zscore(timers.TIMERS_KEY, member) is None and always_on.load(shop.redis, NAME, "staging") is None


@pytest.mark.parametrize("shop", [{"guard": "1h", "per_hour": 1}], indirect=True)
def test_the_circuit_breaker_stops_a_second_automatic_rollback_within_the_hour(shop: Shop) -> None:
    shop.deploy("v1")
    with background_load(shop.url() + "/", seconds=40, rate=60, concurrency=4):
        leaky = shop.deploy("v2")
        watch = replace(policy_for(leaky), watch_s=15.0)  # long enough for Prometheus to see the leak
        result = observe(leaky, source=LiveReleases(client=shop.client), policy=watch)
        assert not result.passed and shop.live_version() == "v1"  # the watch's rollback: one this hour
        again = shop.deploy("v2")  # someone deploys it again; it still leaks
        shop.drive(lambda: shop.events(again, "circuit_breaker_open"), timeout=15, what="the breaker's alert")
    (anomaly,) = shop.events(again, "always_on_anomaly")
    assert anomaly.data["metric"] == "memory_growth"
    (held,) = shop.events(again, "circuit_breaker_open")
    assert (held.data["rollbacks_last_hour"], held.data["limit"]) == (1, 1) and "a person must decide" in \
        held.data["message"]
    assert shop.live_version() == "v2"
    assert not [e for e in again.bus.replay(again.run.id) if e.type == EventType.ROLLBACK_EVENT]
    state = always_on.load(shop.redis, NAME, "staging")
    assert state is not None and state.held  # no rollback is tried again for this release


@pytest.mark.parametrize("shop", [{"guard": "2s"}], indirect=True)
def test_after_the_guard_period_an_anomaly_restarts_the_release_instead(shop: Shop) -> None:
    shop.deploy("v1")
    ctx = shop.deploy("v2")
    container = shop.client.containers.get(f"orchestra-{NAME}-staging-v2")
    started = container.attrs["State"]["StartedAt"]
    with background_load(shop.url() + "/", seconds=40, rate=60, concurrency=4):
        shop.drive(lambda: shop.events(ctx, "always_on_restart"), timeout=25, what="the restart")
    (alert,) = shop.events(ctx, "always_on_anomaly")
    assert (alert.data["action"], alert.data["metric"]) == ("restart", "memory_growth")
    assert alert.data["age_s"] >= alert.data["guard_s"] == 2 and "past its guard period" in alert.data["message"]
    (restart,) = shop.events(ctx, "always_on_restart")
    assert restart.data["restarted"] is True, restart.data["message"]
    container.reload()
    assert container.attrs["State"]["StartedAt"] != started and container.status == "running"
    assert shop.live_version() == "v2"
    assert not [e for e in ctx.bus.replay(ctx.run.id) if e.type == EventType.ROLLBACK_EVENT]


def test_a_deploy_holding_the_lock_pauses_the_checks_and_a_replaced_release_is_not_checked(shop: Shop) -> None:
    first = shop.deploy("v1")
    shop.drive(lambda: shop.looks() == 0 and always_on.load(shop.redis, NAME, "staging"), timeout=10,
               what="v1 to enter the always-on set")
    run = RunStore(shop.redis).create(Run(requested_by="U0CAROL", repo=str(shop.repo), services=[NAME],
                                          env="staging", strategy="blue-green"))
    Locks(shop.redis).acquire(NAME, "staging", owner="deploy", run_id=run.id, ttl_s=60)  # v2's deploy has begun
    fired = shop.redis.hget(timers.LAST_CHECK_KEY, f"{timers.ALWAYS_ON}:{KEY}")
    live = get_live(shop.redis, NAME, "staging")
    assert live is not None and live.current is not None
    v1 = f"http://127.0.0.1:{live.current.port}/"  # v1 itself, not the edge: it keeps leaking once replaced
    with background_load(v1, seconds=25, rate=60, concurrency=4):
        shop.drive(lambda: shop.redis.hget(timers.LAST_CHECK_KEY, f"{timers.ALWAYS_ON}:{KEY}") != fired,
                   timeout=10, what="a check while the deploy holds the lock")
        second = shop.deploy("v2", run=run)
        assert Locks(shop.redis).holder(NAME, "staging") is None  # its deploy is over
        shop.drive(lambda: (s := always_on.load(shop.redis, NAME, "staging")) and s.version == "v2" and s.looks,
                   timeout=15, what="a look at v2 while v1, kept for an instant rollback, leaks")
    assert shop.live_version() == "v2"
    assert not shop.events(first, "always_on_anomaly") and not shop.events(second, "always_on_anomaly")


class _SlowPrometheus(http.server.ThreadingHTTPServer):
    """Answers Prometheus queries with no data; the first query is held until ``release`` is set."""

    daemon_threads = True

    def __init__(self) -> None:
        self.release, self.queries = threading.Event(), 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N802, N805
                self.queries += 1
                if self.queries == 1:
                    self.release.wait(30)
                body = b'{"status": "success", "data": {"resultType": "vector", "result": []}}'
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args: object) -> None:  # noqa: N805
                return

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_check_whose_worker_is_killed_is_fired_again(shop: Shop, tmp_path: Path) -> None:
    shop.deploy("v1")
    shop.drive(lambda: always_on.load(shop.redis, NAME, "staging"), timeout=10, what="v1 to enter the set")
    slow = _SlowPrometheus()
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    env = {**orchestra_env(shop.settings), "ORCHESTRA_PROMETHEUS_URL": f"http://127.0.0.1:{slow.server_port}",
           "DOCKER_HOST": shop.settings.docker_host or ""}

    def worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = worker()
    try:
        queue = stage_queue(shop.redis)
        wait_for(lambda: timers.fire_due(shop.redis, queue, PIPELINE) is not None and slow.queries >= 1,
                 timeout=20, interval=0.5, what="a look held by Prometheus")
        killed_job = shop.redis.hget(timers.LAST_CHECK_KEY, f"{timers.ALWAYS_ON}:{KEY}")
        kill_tree(first.pid)  # the worker and its work horse, mid-look
        first.wait()
        slow.release.set()
        killed = time.monotonic()
        second = worker()
        try:
            wait_for(lambda: timers.fire_due(shop.redis, queue, PIPELINE) is not None and shop.looks() >= 1,
                     timeout=timers.LEASE_S + timers.TIMED_LOCK_TTL_S + 5, interval=0.5,
                     what="the killed look to be fired again")
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=15)
        assert time.monotonic() - killed <= timers.LEASE_S + 5
        assert shop.redis.hget(timers.LAST_CHECK_KEY, f"{timers.ALWAYS_ON}:{KEY}") != killed_job
        assert slow.queries >= 2
    finally:
        slow.release.set()
        slow.shutdown()
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
