"""Demo traffic: a config field that acts or is refused, a bounded rate, loopback only, and it stops.

The "edge" here is the example shop's backend as a real process; the live state is written with the
deploy target's own state functions (the Docker path that writes it is run by tests/test_readme.py).
"""
from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.context import AgentContext
from agents.deploy.targets.state import LiveState, Release, clear_live, set_live
from agents.observability import stage as observe
from agents.observability.load import LoadError, check_url
from agents.observability.policy import Policy, default_specs
from agents.observability.traffic import Traffic, WatchTraffic, demo_traffic
from agents.observability.watch import forget_state
from orchestra.config import CONFIG_FILENAME, ProjectConfig, load_config, validate_file
from orchestra.config.demo_traffic import DemoTraffic
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run, RunStore
from tests.support.shop import SHOP_DIR, shop_service


@pytest.fixture(scope="module")
def backend() -> Iterator[str]:
    with shop_service("backend", env={"APP_VERSION": "v1"}) as url:
        yield url


def served(url: str) -> int:
    """Application requests the shop service has answered (its own counter)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=2) as reply:
        text = reply.read().decode()
    return int(sum(float(v) for v in re.findall(r'^http_requests_total\{[^}]*\} ([0-9.e+]+)$', text, re.M)))


def go_live(redis: Redis, url: str, *, version: str = "v1", run_id: str = "r-1", service: str = "backend",
            env: str = "staging") -> None:
    port = int(url.rsplit(":", 1)[1])
    release = Release(version=version, image=f"shop-{service}:{version}", port=port, container="c", run_id=run_id)
    set_live(redis, LiveState(service=service, env=env, edge_port=port, edge_prefix="/nonexistent",
                              current=release, weights={version: 100}, run_id=run_id))


def settle(url: str) -> int:
    time.sleep(0.3)
    return served(url)


def test_the_rate_is_bounded_and_it_stops_with_the_block(redis: Redis, backend: str) -> None:
    go_live(redis, backend)
    before = served(backend)
    traffic = Traffic(redis, "staging", ["backend"], DemoTraffic(rps=10, path="/api/items")).start()
    time.sleep(3.0)
    traffic.close()
    sent = settle(backend) - before
    assert 12 <= sent <= 35, sent  # 10/s for 3 s, paced (one early slot per 2 s chunk at most): no burst
    assert traffic.statuses == {200: sent} and traffic.urls == {"backend": f"{backend}/api/items"}
    assert settle(backend) == before + sent  # closed: nothing more


def test_a_first_release_gets_traffic_once_its_edge_is_up(redis: Redis, backend: str) -> None:
    traffic = Traffic(redis, "staging", ["backend"], DemoTraffic(rps=20)).start()
    try:
        time.sleep(1.0)
        assert traffic.statuses == {}  # no live state yet: it waits, it does not guess a port
        before = served(backend)
        go_live(redis, backend)
        time.sleep(2.5)
    finally:
        traffic.close()
    assert settle(backend) - before >= 20


def test_watching_stops_when_the_release_is_replaced_or_stopped(redis: Redis, backend: str) -> None:
    go_live(redis, backend, version="v1", run_id="r-1")
    spec = DemoTraffic(rps=20, path="/api/items")
    traffic = Traffic(redis, "staging", ["backend"], spec, released={"backend": "v1"}).start()
    try:
        time.sleep(2.5)
        assert traffic.statuses[200] > 0
        go_live(redis, backend, version="v2", run_id="r-2")  # another run's release replaced it
        time.sleep(2.5)  # the chunk in flight ends
        after_replace = served(backend)
        time.sleep(1.0)
        assert served(backend) == after_replace
        assert not any(t.is_alive() for t in traffic._threads)
    finally:
        traffic.close()

    go_live(redis, backend, version="v3", run_id="r-3")
    stopped = Traffic(redis, "staging", ["backend"], spec, released={"backend": "v3"})
    clear_live(redis, "backend", "staging")  # the release was stopped
    assert stopped.target("backend") == ""


def test_a_path_that_names_another_host_is_refused_twice(redis: Redis, backend: str) -> None:
    for path in ("@10.0.0.1/", "//10.0.0.1/", "http://10.0.0.1/", "/x\r\nHost: evil"):
        with pytest.raises(ValueError, match="is not a path on the service"):
            DemoTraffic(rps=1, path=path)
    go_live(redis, backend)
    forged = DemoTraffic.model_construct(rps=5.0, path="@10.0.0.1/")  # past the config's validation
    traffic = Traffic(redis, "staging", ["backend"], forged)
    assert traffic.target("backend") == ""  # the load generator's own check refuses the URL
    for url in ("http://10.0.0.1/", "http://localhost:80/", "http://127.0.0.1@10.0.0.1/", "https://127.0.0.1/",
                "http://127.0.0.1:99999/", "http://[::ffff:10.0.0.1]/"):
        with pytest.raises(LoadError, match="refusing to load"):
            check_url(url)
    assert check_url("http://[::1]:8080/x").hostname == "::1"


@pytest.mark.parametrize(("value", "problem"), [
    ("{rps: 500}", "500 requests/s is out of range"),
    ("{rps: 0}", "0 requests/s is out of range"),
    ("{rps: .nan}", "is not a number of requests per second"),
    ("{rps: fast}", "`fast` is not a number of requests per second"),
    ("{rps: 5, url: 'http://10.0.0.1/'}", "demo_traffic.url: unknown key"),
    ("{rps: 5, path: //evil.example/}", "is not a path on the service"),
])
def test_the_field_is_refused_with_the_reason(tmp_path: Path, value: str, problem: str) -> None:
    path = tmp_path / CONFIG_FILENAME
    path.write_text(f"environments:\n  staging:\n    demo_traffic: {value}\n")
    problems = [str(p) for p in validate_file(path)]
    assert len(problems) == 1 and problem in problems[0] and "environments.staging.demo_traffic" in problems[0]


def _ctx(redis: Redis, settings: Settings, env: str, config: ProjectConfig) -> AgentContext:
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo="shop", services=["backend"], env=env))
    return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=SHOP_DIR,
                        config=config)


def test_only_environments_that_say_so_get_traffic(redis: Redis, settings: Settings, backend: str) -> None:
    config = load_config(SHOP_DIR)  # the example: production 20/s, staging 5/s, development nothing
    assert config.environment("prod").demo_traffic == DemoTraffic(rps=20, path="/")
    assert config.environment("development").demo_traffic is None
    go_live(redis, backend, env="development")
    with demo_traffic(_ctx(redis, settings, "development", config)) as traffic:
        assert traffic is None
    staging = _ctx(redis, settings, "staging", config)
    go_live(redis, backend, env="staging", run_id=staging.run.id)
    before = served(backend)
    with demo_traffic(staging) as traffic:
        assert traffic is not None and traffic.services == ["backend"]
        time.sleep(2.0)
    assert 5 <= settle(backend) - before <= 14  # 5/s for 2 s


def test_a_watched_release_gets_traffic_between_looks_from_one_router(redis: Redis, settings: Settings,
                                                                      backend: str) -> None:
    """The watch holds no worker, so the router keeps its demo traffic going; a second router does not
    double it, and the traffic stops with the watch."""
    config = load_config(SHOP_DIR)  # staging: 5/s
    staging = _ctx(redis, settings, "staging", config)
    go_live(redis, backend, env="staging", run_id=staging.run.id)
    observe.begin(staging, policy=Policy(specs=default_specs(), watch_s=30.0))
    first, second = WatchTraffic(redis, "router-1"), WatchTraffic(redis, "router-2")
    before = served(backend)
    try:
        first.sync([staging.run.id])
        second.sync([staging.run.id])
        assert list(first.running) == [staging.run.id] and second.running == {}
        time.sleep(2.0)
        forget_state(redis, staging.run.id)  # the watch concluded
        first.sync([staging.run.id])
        assert first.running == {}
    finally:
        first.close()
        second.close()
    assert 5 <= settle(backend) - before <= 14  # 5/s for 2 s, from one router only

    other = _ctx(redis, settings, "staging", config)  # another run's release: not this run's to watch
    assert observe.begin(other).summary == "nothing to watch: this run released no new version"
