"""A worker SIGKILLed mid-deploy never leaves traffic without an owner: the reconciler puts it back.

Real dockerd, registry and nginx edges, real `orchestra worker` processes and a real router. Each case
deploys v1 of its own service, then a v2 run whose worker (and its work horse) is killed at a moment the
product itself records (the deploy's intent and live state in Redis): (a) the new container started,
no traffic moved; (d) a blue-green switch before the 100% move, and after it (the group's first service
live, the second starting). The cases run side by side (each a service of its own), as the router only
reaps a stage 20 s after it began. A canary's steps no longer run in the deploy job but in scheduled
checks, which a killed worker does not end: tests/jobs/test_canary_scheduled.py kills one mid-check.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import docker
import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.context import AgentContext
from agents.deploy import intent
from agents.deploy import stage as deploy
from agents.deploy.targets.docker import LABEL
from agents.deploy.targets.state import get_live
from jobs.dispatch import dispatch
from jobs.graph import DEPLOY, Graph
from jobs.router import Router
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import Locks
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.docker_services import DockerEnv, stop_deployed
from tests.support.processes import children_of, kill_tree
from tests.support.sample_apps import plain_app, sample_repo
from tests.support.services import wait_for

pytestmark = pytest.mark.docker
ENV = "staging"
GRAPH = Graph((DEPLOY,))  # the images are built once for the module; each run deploys them


@dataclass
class Case:
    services: list[str]
    strategy: str
    slow: tuple[str, ...] = ()  # services whose v2 takes a minute to answer its health check
    reached: Callable[[Redis, docker.DockerClient], bool] = lambda redis, client: False
    horse_only: bool = False  # kill only the work horse (as the OOM killer would): its worker lives on
    lock_ttl_s: float | None = None  # a lock that expires soon after its renewals stop (the run loses it)
    queued_next: bool = True  # a v3 run waits behind the v2 run
    run_id: str = ""
    next_run_id: str = ""
    killed_at: float = 0.0
    settled_s: float = 0.0
    seen: dict[str, Any] = field(default_factory=dict)  # per service, the moment its run ended


def _starting(service: str) -> Callable[[Redis, docker.DockerClient], bool]:
    def reached(redis: Redis, client: docker.DockerClient) -> bool:
        left = intent.get(redis, service, ENV)
        return left is not None and left.phase == intent.STARTING and _running(client, service, "v2")
    return reached


def _first_live_second_starting(redis: Redis, client: docker.DockerClient) -> bool:
    first = intent.get(redis, "sback", ENV)
    return first is not None and first.phase == intent.LIVE and _starting("sfront")(redis, client)


CASES = {
    "a-new-container-started": Case(["sa"], "canary", slow=("sa",), reached=_starting("sa")),
    "d-blue-green-before-the-100-move": Case(["sd"], "blue-green", slow=("sd",), reached=_starting("sd")),
    "d-blue-green-after-the-100-move": Case(["sback", "sfront"], "blue-green", slow=("sfront",),
                                            reached=_first_live_second_starting),
    "e-work-horse-killed-while-starting": Case(["sh"], "canary", slow=("sh",), reached=_starting("sh"),
                                               horse_only=True),
}
# The run loses its lock after the kill: whoever holds the lock next puts the deploy back.
LOST = {
    "the-next-deploy-puts-it-back": Case(["sn"], "canary", slow=("sn",), reached=_starting("sn"), lock_ttl_s=3),
    "a-starting-worker-puts-it-back": Case(["sw"], "canary", slow=("sw",), reached=_starting("sw"), lock_ttl_s=3,
                                           queued_next=False),
}
EVERY = {**CASES, **LOST}


def _running(client: docker.DockerClient, service: str, version: str) -> bool:
    return bool(client.containers.list(filters={"label": [f"{LABEL}={service}", f"orchestra.version={version}"]}))


def _containers(client: docker.DockerClient, service: str, version: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": [f"{LABEL}={service}", f"orchestra.version={version}"]})


@pytest.fixture(scope="module")
def images(docker_env: DockerEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny service as v1, v2, and a v2 that sleeps a minute before it listens."""
    root = tmp_path_factory.mktemp("reconcile-images")
    settings = Settings(registry=docker_env.registry, base_image=docker_env.base_image)
    client, built = docker_env.client(), {}
    for tag, slow in (("v1", False), ("v2", False), ("v2-slow", True)):
        path = plain_app(root / tag, marker=tag)
        if slow:
            (path / "app.py").write_text("import time\ntime.sleep(60)\n" + (path / "app.py").read_text())
        request = BuildRequest("reconcile", tag, root / "out", Images(python=docker_env.base_image))
        built[tag] = str(build_service(client, ServiceSpec("app", path, 8000), request, settings=settings)["image"])
    client.close()
    return built


def _repo(path: Path) -> Path:
    repo = sample_repo(path, {"sa": [], "sd": [], "sback": [], "sfront": ["sback"], "sh": [],
                                 "sn": [], "sw": []})
    config = repo / "devops_orchestra.yaml"  # pauses long enough to kill a worker in; no metrics to judge
    config.write_text(config.read_text().replace("analysis_interval: 1s", "analysis_interval: 4s")
                      + "observability:\n  tools: []\n")
    return repo


def _build_ready(redis: Redis, run_id: str, images: dict[str, str], versions: dict[str, tuple[str, str]]) -> None:
    """What the build stage publishes for the run (the images were built by this module): service ->
    (image tag, version)."""
    built = {service: {"image": images[tag], "version": version} for service, (tag, version) in versions.items()}
    EventBus(redis).emit(run_id, EventType.BUILD_READY, "build", images=built, passed=True, summary="built")


def _worker(settings: Settings, name: str, docker_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router", "--name", name],
                            env={**orchestra_env(settings), "DOCKER_HOST": docker_url}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill(proc: subprocess.Popen[bytes], *, horse_only: bool = False) -> None:
    """SIGKILL the worker and everything below it, or only its work horse (its youngest child: the other
    one a worker may have is RQ's scheduler, started with the worker)."""
    if horse_only:
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
            os.kill(_youngest_child(proc.pid), signal.SIGKILL)
    else:
        kill_tree(proc.pid)
        proc.wait(timeout=10)


def _youngest_child(pid: int) -> int:
    children = children_of().get(pid)
    assert children, f"worker {pid} has no work horse"
    return max(children)[1]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def killed(docker_env: DockerEnv, images: dict[str, str], redis_url: str, cache_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Case], Redis, docker.DockerClient]]:
    """Every case deployed at v1, its v2 run's worker killed at its moment, and the runs settled."""
    tmp = tmp_path_factory.mktemp("reconcile")
    settings = Settings.from_env().with_(redis_url=redis_url, workdir=tmp / "work", cache_dir=cache_dir,
                                         slack_bot_token=None, slack_app_token=None, llm_api_key=None, llm_url=None,
                                         github_token=None, sandbox="none", docker_host=docker_env.url,
                                         registry=docker_env.registry, base_image=docker_env.base_image)
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    client = docker_env.client()
    repo = _repo(tmp / "shop")
    stop, procs = threading.Event(), list[subprocess.Popen[bytes]]()
    router = Router(redis, settings, graph=GRAPH, name="survivor-router")
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    try:
        everything = [s for case in EVERY.values() for s in case.services]
        first = Run(requested_by="U0ALICE", repo=str(repo), services=everything, env=ENV, strategy="blue-green")
        ctx = AgentContext(run=first, settings=settings, redis=redis, bus=EventBus(redis), workspace=repo,
                           config=load_config(repo), actor="deploy")
        v1 = deploy.run(ctx, images={s: {"image": images["v1"], "version": "v1"} for s in everything}, client=client)
        assert v1.passed, v1.summary
        thread.start()
        for case in EVERY.values():  # each v2 run holds its lock; a v3 run waits behind it
            case.run_id = _deploy(redis, settings, repo, case.services, case.strategy, "U0ALICE",
                                  lock_ttl_s=case.lock_ttl_s)
            _build_ready(redis, case.run_id, images,
                         {s: ("v2-slow" if s in case.slow else "v2", "v2") for s in case.services})
            if case.queued_next:
                case.next_run_id = _deploy(redis, settings, repo, case.services, "blue-green", "U0BOB")
                _build_ready(redis, case.next_run_id, images, {s: ("v2", "v3") for s in case.services})
        victims = {f"victim-{i}": _worker(settings, f"victim-{i}", docker_env.url) for i in range(len(EVERY))}
        procs += victims.values()
        pending, killed, deadline = dict(EVERY), list[Case](), time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for name, case in list(pending.items()):
                if case.reached(redis, client):
                    worker = _started_by(redis, case.run_id)
                    assert worker in victims, f"{name} is not running in a victim worker ({worker})"
                    _kill(victims[worker], horse_only=case.horse_only)
                    case.killed_at = time.monotonic()
                    killed.append(case)
                    del pending[name]
            _settle(redis, client, killed)  # a worker that lived on may have reconciled already
            time.sleep(0.05)
        assert not pending, f"never reached: {sorted(pending)}"
        procs += [_worker(settings, f"survivor-{i}", docker_env.url) for i in range(2)]
        deadline = time.monotonic() + 90
        while killed and time.monotonic() < deadline:
            _settle(redis, client, killed)
            time.sleep(0.05)
        assert not killed, f"not reconciled within 90 s: {[c.run_id for c in killed]}"
        for case in EVERY.values():
            if case.next_run_id:
                wait_for(partial(_ended, redis, case.next_run_id), timeout=60, interval=0.1,
                         what=f"the next queued run {case.next_run_id}")
        procs.append(_worker(settings, "started-later", docker_env.url))  # puts back what ended runs left
        wait_for(lambda: intent.everywhere(redis) == [], timeout=30, interval=0.1,
                 what="a starting worker to put back the deploy its run left")
        yield EVERY, redis, client
    finally:
        _stop(procs)
        stop.set()
        thread.join(timeout=10)
        stop_deployed(client, settings.workdir)
        client.close()
        redis.close()


def _settle(redis: Redis, client: docker.DockerClient, killed: list[Case]) -> None:
    """Look at the services of each killed run that has ended, the moment it has (the next queued run
    starts then), and take it off ``killed``."""
    for case in list(killed):
        if RunStore(redis).get(case.run_id).status.finished:
            case.settled_s = round(time.monotonic() - case.killed_at, 1)
            for service in case.services:
                state = get_live(redis, service, ENV)
                case.seen[service] = {"state": state, "versions": _versions(state.url, 10) if state else set(),
                                      "v2": _containers(client, service, "v2"),
                                      "intent": intent.get(redis, service, ENV)}
            killed.remove(case)


def _ended(redis: Redis, run_id: str) -> bool:
    return RunStore(redis).get(run_id).status.finished


def _deploy(redis: Redis, settings: Settings, repo: Path, services: list[str], strategy: str, user: str, *,
            lock_ttl_s: float | None = None) -> str:
    ttl = {"lock_ttl_s": lock_ttl_s} if lock_ttl_s else {}
    return dispatch(Intent(kind=IntentKind.DEPLOY, services=services, service=services[0], env=ENV,
                           strategy=strategy, user=user, source="cli"), redis=redis, settings=settings, repo=repo,
                    graph=GRAPH, **ttl).id


def _started_by(redis: Redis, run_id: str) -> str | None:
    job_id = RunStore(redis).get(run_id).job_id
    if not job_id:
        return None
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    return job.worker_name if job.get_status() == "started" else None


def _versions(url: str, n: int = 20) -> set[str]:
    seen = set()
    for _ in range(n):
        with urllib.request.urlopen(url + "/", timeout=5) as response:
            seen.add(json.loads(response.read())["version"])
    return seen


@pytest.mark.parametrize("name", list(CASES))
def test_a_worker_killed_mid_deploy_is_followed_by_traffic_back_on_the_old_version(
        name: str, killed: tuple[dict[str, Case], Redis, docker.DockerClient]) -> None:
    cases, redis, client = killed
    case = cases[name]
    run = RunStore(redis).get(case.run_id)
    assert run.status == RunStatus.FAILED, run.reason
    events = EventBus(redis).replay(case.run_id)
    failed = [e.data for e in events if e.type == EventType.DEPLOYMENT_FAILED]
    assert len(failed) == 1 and failed[0]["reconciled"] == case.services, failed
    summary = failed[0]["summary"]
    for service in case.services:
        assert f"{service}: the worker running deploy stopped" in summary, summary
        assert "on v1, the v2 container was removed" in summary, summary
        seen = case.seen[service]  # the moment the run ended
        assert seen["versions"] == {"v1"}, f"the edge of {service} served {seen['versions']}"
        state = seen["state"]
        assert state is not None and state.current is not None and state.current.version == "v1", state
        assert state.weights == {"v1": 100}
        assert seen["v2"] == [] and _containers(client, service, "v2") == [], f"{service}'s v2 was left behind"
        assert seen["intent"] is None and intent.get(redis, service, ENV) is None
    nxt = EventBus(redis).replay(case.next_run_id)  # the deploy queued behind the killed one runs now
    assert RunStore(redis).get(case.next_run_id).status == RunStatus.SUCCEEDED, RunStore(redis).get(case.next_run_id)
    triggered = [e.data for e in nxt if e.type == EventType.DEPLOYMENT_TRIGGERED]
    assert [(t["from_version"], t["version"]) for t in triggered] == [("v1", "v3")] * len(case.services)
    for service in case.services:
        live = get_live(redis, service, ENV)
        assert live is not None and _versions(live.url) == {"v3"}
    rolled = [e.data for e in events if e.type == EventType.ROLLBACK_EVENT]
    assert sorted(r["service"] for r in rolled) == sorted(case.services)
    assert all(r["to_version"] == "v1" and r["from_version"] == "v2" for r in rolled)
    assert case.settled_s < 40, f"settled {case.settled_s}s after the kill"
    print(f"{name}: consistent {case.settled_s}s after the SIGKILL: {summary}")


def _serves_only_v1_without_v2(redis: Redis, client: docker.DockerClient, service: str) -> None:
    state = get_live(redis, service, ENV)
    assert state is not None and state.current is not None and state.current.version == "v1", state
    assert state.weights == {"v1": 100} and _versions(state.url) == {"v1"}
    assert _containers(client, service, "v2") == [] and intent.get(redis, service, ENV) is None


def test_a_deploy_that_lost_its_lock_is_put_back_by_the_next_deploy_of_the_service(
        killed: tuple[dict[str, Case], Redis, docker.DockerClient]) -> None:
    cases, redis, client = killed
    case = cases["the-next-deploy-puts-it-back"]
    run = RunStore(redis).get(case.run_id)
    assert run.status == RunStatus.FAILED, run.reason
    nxt = EventBus(redis).replay(case.next_run_id)
    assert RunStore(redis).get(case.next_run_id).status == RunStatus.SUCCEEDED
    put_back = [e.data for e in nxt if e.type == EventType.DEPLOYMENT_PROGRESS and e.data.get("phase") == "reconciled"]
    assert len(put_back) == 1 and put_back[0]["interrupted_run"] == case.run_id
    assert f"(run {case.run_id}, while starting v2, before any traffic moved) was put back on v1 first" \
        in put_back[0]["message"]
    assert _containers(client, "sn", "v2") == [] and intent.get(redis, "sn", ENV) is None
    live = get_live(redis, "sn", ENV)
    assert live is not None and live.current is not None and live.current.version == "v3"
    assert live.previous is not None and live.previous.version == "v1"  # v2 never went live


def test_a_deploy_whose_run_ended_with_its_lock_lost_is_put_back_by_a_worker_that_starts(
        killed: tuple[dict[str, Case], Redis, docker.DockerClient]) -> None:
    cases, redis, client = killed
    case = cases["a-starting-worker-puts-it-back"]
    failed = [e.data for e in EventBus(redis).replay(case.run_id) if e.type == EventType.DEPLOYMENT_FAILED]
    assert len(failed) == 1 and "sw: the run no longer holds its lock" in failed[0]["summary"], failed
    rolled = [e.data for e in EventBus(redis).replay(case.run_id) if e.type == EventType.ROLLBACK_EVENT]
    assert len(rolled) == 1 and rolled[0]["reconciled"] and rolled[0]["to_version"] == "v1"
    assert "while starting v2, before any traffic moved: traffic stays on v1, the v2 container was removed" \
        in rolled[0]["reason"]
    _serves_only_v1_without_v2(redis, client, "sw")
    assert Locks(redis).holder("sw", ENV) is None  # the lock it took for the moment is free again
