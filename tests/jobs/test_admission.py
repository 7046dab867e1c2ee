"""Exactly one deploy per service and environment: admission, the queue, hand-off, fencing, cancel, a dead holder.

Real redis-server throughout; real RQ worker processes and a router where a run must progress.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from redis import Redis

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.context import AgentContext
from agents.deploy import stage as deploy_agent
from agents.deploy.strategies import Shift
from agents.deploy.targets.state import Release, get_live
from handlers import cancel
from handlers.reply import Who
from jobs.dispatch import dispatch, dispatch_run
from jobs.graph import ANALYZE, DEPLOY, TEST, Graph
from jobs.router import Router
from orchestra import limits
from orchestra.config import load_config
from orchestra.errors import LockHeld, StageFailed
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import LOCK_KEY, Fence, Locks, request_cancel
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, Run, RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.docker_services import DockerEnv
from tests.support.files import write_files
from tests.support.processes import kill_tree
from tests.support.sample_apps import plain_app, sample_repo
from tests.support.services import wait_for

QUICK = Graph((ANALYZE,))
TTL_S = 5  # a short lock TTL for the killed-holder test (the heartbeat renews every 2 s)
CONFIG = """\
project: {name: shop, language: python, framework: flask}
deployment:
  strategy: blue-green
  services:
    - {name: backend, path: backend, port: 5001}
    - {name: frontend, path: frontend, port: 5000, depends_on: [backend]}
environments:
  staging:
    approval_required: false
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    dest = tmp_path / "shop"
    shutil.copytree(PROJECT_ROOT / "examples" / "shop", dest,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (dest / "devops_orchestra.yaml").write_text(CONFIG)
    return dest


def ask(user: str, *, no_wait: bool = False, service: str = "backend") -> Intent:
    return Intent(kind=IntentKind.DEPLOY, service=service, env="staging", user=user, source="slack", no_wait=no_wait)


def events(redis: Redis, run_id: str, kind: EventType) -> list[dict[str, object]]:
    return [e.data for e in EventBus(redis).replay(run_id) if e.type == kind]


@pytest.fixture
def router_thread(redis: Redis, settings: Settings) -> Iterator[Callable[[Graph], Router]]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(graph: Graph) -> Router:
        stop = threading.Event()
        router = Router(redis, settings, graph=graph, name=f"admission-{len(stops)}")
        thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
        thread.start()
        stops.append((stop, thread))
        return router

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(timeout=10)


def test_fifty_concurrent_requests_admit_one_and_queue_or_refuse_the_rest(redis: Redis, settings: Settings,
                                                                           repo: Path) -> None:
    barrier = threading.Barrier(50)
    outcomes: dict[int, object] = {}

    def request(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = dispatch_run(ask(f"U{i:04d}", no_wait=i % 5 == 0), redis=redis, settings=settings,
                                       repo=repo, graph=QUICK)
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=request, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(outcomes) == 50
    refused = {i: o for i, o in outcomes.items() if isinstance(o, Exception)}
    started = {i: o for i, o in outcomes.items() if not isinstance(o, Exception)}
    assert all(isinstance(o, LockHeld) and "without --no-wait" in str(o) for o in refused.values()), refused
    admitted = [i for i, o in started.items() if o.admission.outcome == "admitted"]  # type: ignore[attr-defined]
    queued = [i for i, o in started.items() if o.admission.outcome == "queued"]  # type: ignore[attr-defined]
    assert len(admitted) == 1 and len(queued) + len(refused) == 49
    assert set(refused) == {i for i in range(0, 50, 5)} - set(admitted)  # only those who said --no-wait
    holder = Locks(redis).holder("backend", "staging")
    winner = started[admitted[0]].run  # type: ignore[attr-defined]
    assert holder is not None and holder.run_id == winner.id and winner.fence == {"backend": holder.token}
    # Nothing lost: every queued run is recorded as queued, once, in the queue; positions 1..n without gaps.
    line = Locks(redis).queue("backend", "staging")
    assert sorted(line) == sorted(started[i].run.id for i in queued) and len(set(line)) == len(line)  # type: ignore[attr-defined]
    positions = sorted(started[i].admission.position for i in queued)  # type: ignore[attr-defined]
    assert positions == list(range(1, len(queued) + 1))
    assert all(RunStore(redis).get(r).status == RunStatus.QUEUED and not RunStore(redis).get(r).fence for r in line)
    audit = Counter(a["action"] for a in Audit(redis).entries(count=500))
    assert audit["run_admitted"] == 1 and audit["run_queued"] == len(queued) and audit["run_refused"] == len(refused)
    assert audit["run_admitted"] + audit["run_queued"] + audit["run_refused"] == 50
    waiting = events(redis, line[0], EventType.LOCK_WAITING)[0]
    assert f"(run {winner.id}); this run is number 1 in the queue" in str(waiting["summary"])


def test_the_holder_finishing_hands_the_lock_to_the_next_which_starts(
        redis: Redis, settings: Settings, repo: Path, router_thread: Callable[[Graph], Router],
        start_worker: Callable[..., object]) -> None:
    runs = [dispatch(ask(user), redis=redis, settings=settings, repo=repo, graph=QUICK)
            for user in ("U0ALICE", "U0BOB", "U0CAROL")]
    assert [r.fence for r in runs] == [{"backend": 1}, {}, {}]
    start_worker("--no-router")
    router_thread(QUICK)
    for run in runs:
        wait_for(lambda run=run: RunStore(redis).get(run.id).status == RunStatus.SUCCEEDED, timeout=180,
                 interval=0.2, what=f"run {run.id} to succeed")
    done = [RunStore(redis).get(r.id) for r in runs]
    assert [r.fence for r in done] == [{"backend": 1}, {"backend": 2}, {"backend": 3}]  # tokens only go up
    # One at a time: each started after the one before it had finished.
    assert done[0].finished_at <= done[1].updated_at and done[1].finished_at <= done[2].updated_at  # type: ignore[operator]
    for before, after in zip(done, done[1:], strict=False):
        started = min(e.ts for e in EventBus(redis).replay(after.id) if e.type == EventType.STAGE_STARTED)
        assert started >= (before.finished_at or 0)
        granted = events(redis, after.id, EventType.LOCK_GRANTED)
        assert len(granted) == 1 and f"run {before.id} ended" in str(granted[0]["summary"])
    handed = [a for a in Audit(redis).entries() if a["action"] == "lock_handed_on"]
    assert [a["run_id"] for a in handed] == [runs[1].id, runs[2].id]
    assert Locks(redis).holder("backend", "staging") is None and Locks(redis).queue("backend", "staging") == []


class Recorded:
    """The traffic split a strategy talks to, recording every change it is asked for."""

    def __init__(self) -> None:
        self.moves: list[int] = []

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        self.moves.append(weight)
        return {new.version: weight, **({old.version: 100 - weight} if old else {})}


def _shift(traffic: Recorded, fence: Fence) -> Shift:
    new = Release(version="v2", image="api:v2", container="c2", port=1, run_id=fence.run_id)
    old = Release(version="v1", image="api:v1", container="c1", port=2, run_id="r-before")
    def shifted(step: int, split: dict[str, int]) -> None:
        pass
    return Shift(traffic, new, old, shifted, service="backend", env="staging", fence=fence)


def test_a_stale_token_moves_no_traffic(redis: Redis) -> None:
    locks = Locks(redis)
    old = Run(requested_by="U0ALICE", repo="/r", services=["backend"], env="staging")
    assert locks.admit(old, ttl_s=0.3).outcome == "admitted"
    stale = Fence(redis, old.id, "staging", {"backend": 1})
    traffic = Recorded()
    _shift(traffic, stale).to(10, step=1)  # the owner moves traffic
    wait_for(lambda: locks.holder("backend", "staging") is None, timeout=5, what="the stalled owner's lock to expire")
    new = Run(requested_by="U0BOB", repo="/r", services=["backend"], env="staging")
    assert locks.admit(new, ttl_s=60).fence == {"backend": 2}
    fenced = (f"run {old.id} no longer holds the deploy lock of backend in staging "
              f"\\(its token 1 is stale; the lock is held by run {new.id} \\(token 2\\)\\)")
    with pytest.raises(StageFailed, match=fenced):
        _shift(traffic, stale).to(50, step=2)
    # Forged: the right run id with an old token, as a worker resumed after the lock went round again.
    assert locks.hand_on(RunStore(redis).get(new.id), why="done") == []
    again = Run(id=old.id, requested_by="U0ALICE", repo="/r", services=["backend"], env="staging")
    redis.delete(f"orchestra:run:{old.id}")
    assert locks.admit(again, ttl_s=60).fence == {"backend": 3}
    with pytest.raises(StageFailed, match="its token 1 is stale"):
        _shift(traffic, stale).to(50, step=2)
    assert traffic.moves == [10]
    _shift(traffic, Fence(redis, old.id, "staging", {"backend": 3})).to(50, step=2)
    assert traffic.moves == [10, 50]
    request_cancel(redis, old.id, "U0CAROL")
    with pytest.raises(StageFailed, match="cancelled by U0CAROL before moving backend's traffic"):
        _shift(traffic, Fence(redis, old.id, "staging", {"backend": 3})).to(100, step=3)
    assert traffic.moves == [10, 50]


def test_only_the_owner_renews_or_releases(redis: Redis) -> None:
    locks = Locks(redis)
    owner = Run(requested_by="U0ALICE", repo="/r", services=["backend"], env="staging")
    locks.admit(owner, ttl_s=60)
    owner = RunStore(redis).get(owner.id)
    impostor = owner.model_copy(update={"fence": {"backend": 7}})
    assert locks.renew(impostor) == 0 and locks.hand_on(impostor, why="forged") == []
    assert locks.release("backend", "staging", run_id="r-someone-else") is False
    assert locks.holder("backend", "staging").run_id == owner.id  # type: ignore[union-attr]
    redis.pexpire(LOCK_KEY.format(service="backend", env="staging"), 500)
    assert locks.renew(owner) == 1 and redis.pttl(LOCK_KEY.format(service="backend", env="staging")) > 50_000


def test_cancel_of_a_queued_run_takes_it_out_of_the_queue(redis: Redis, settings: Settings, repo: Path) -> None:
    first, second, third = (dispatch(ask(u), redis=redis, settings=settings, repo=repo, graph=QUICK)
                            for u in ("U0ALICE", "U0BOB", "U0CAROL"))
    assert Locks(redis).queue("backend", "staging") == [second.id, third.id]
    reply = cancel.handle(Intent(kind=IntentKind.CANCEL, user="U0BOB", source="slack"), Who("U0BOB"),
                          redis=redis, settings=settings, run_id=second.id)
    assert reply.run is not None and reply.run.id == second.id
    assert Locks(redis).queue("backend", "staging") == [third.id]
    router = Router(redis, settings, graph=QUICK, name="cancel-test")
    [cancelled] = [e for e in EventBus(redis).replay(second.id) if e.type == EventType.RUN_CANCELLED]
    router.handle(cancelled)
    assert RunStore(redis).get(second.id).status == RunStatus.CANCELLED
    router._finish(first.id, RunStatus.SUCCEEDED, "all stages passed")  # the holder ends: the lock skips the cancelled
    assert Locks(redis).holder("backend", "staging").run_id == third.id  # type: ignore[union-attr]
    assert RunStore(redis).get(third.id).status == RunStatus.RUNNING  # its first stage is enqueued
    assert events(redis, second.id, EventType.LOCK_GRANTED) == []
    actions = [(a["action"], a["run_id"]) for a in Audit(redis).entries()]
    assert ("run_cancel_requested", second.id) in actions and ("queued_run_cancelled", second.id) in actions
    assert ("lock_handed_on", third.id) in actions


@pytest.fixture
def slow_repo(tmp_path: Path) -> Path:
    """A service whose tests take two minutes: its test stage is still running when the worker is killed."""
    return write_files(tmp_path / "slowpoke", {
        "requirements.txt": "",
        "slowpoke.py": "def answer() -> int:\n    return 42\n",
        "tests/test_slow.py": "import time\n\nfrom slowpoke import answer\n\n\ndef test_takes_its_time():\n"
                              "    time.sleep(120)\n    assert answer() == 42\n",
    })


def test_a_killed_holder_stops_renewing_its_lock_and_the_next_queued_run_gets_it(
        redis: Redis, settings: Settings, slow_repo: Path,
        start_worker: Callable[..., subprocess.Popen[bytes]]) -> None:
    intent = Intent(kind=IntentKind.DEPLOY, user="U0ALICE", source="cli", env="staging")
    graph = Graph((replace(TEST, retries=0),))
    holder = dispatch(intent, redis=redis, settings=settings, repo=slow_repo, graph=graph, lock_ttl_s=TTL_S)
    waiting = dispatch(intent.model_copy(update={"user": "U0BOB"}), redis=redis, settings=settings, repo=slow_repo,
                       graph=graph, lock_ttl_s=TTL_S)
    [service] = holder.services
    worker = start_worker("--no-router")

    def running_tests() -> bool:
        return any("running tests" in str(e.get("message", "")) for e in events(redis, holder.id, EventType.PROGRESS))

    wait_for(running_tests, timeout=180, interval=0.2, what="the holder's test stage running")
    time.sleep(TTL_S + 1)  # longer than the lock's TTL: only the heartbeat's renewals keep it
    lock = Locks(redis).holder(service, "staging")
    assert lock is not None and lock.run_id == holder.id and lock.token == holder.fence[service]
    kill_tree(worker.pid)
    worker.wait(timeout=10)
    killed = time.monotonic()
    wait_for(lambda: Locks(redis).holder(service, "staging") is None, timeout=10, interval=0.05,
             what="the dead holder's lock to expire")
    expired_after = time.monotonic() - killed
    assert expired_after <= TTL_S + 0.5, expired_after
    assert RunStore(redis).get(waiting.id).status == RunStatus.QUEUED  # nothing passes a lock on by itself
    Router(redis, settings, graph=graph, name="after-the-kill").tick()
    lock = Locks(redis).holder(service, "staging")
    assert lock is not None and lock.run_id == waiting.id and lock.token == holder.fence[service] + 1
    granted = events(redis, waiting.id, EventType.LOCK_GRANTED)
    assert len(granted) == 1 and "lock expired" in str(granted[0]["summary"])
    assert RunStore(redis).get(waiting.id).status == RunStatus.RUNNING
    handed = [a for a in Audit(redis).entries() if a["action"] == "lock_handed_on"]
    assert handed[-1]["run_id"] == waiting.id and handed[-1]["detail"]["why"] == "the lock expired"


def test_a_lock_outlives_the_longest_deploy_job() -> None:
    from jobs.graph import DEPLOY

    assert limits.DEPLOY_LOCK_S > DEPLOY.timeout == limits.DEPLOY_JOB_S
    assert inspect.signature(dispatch).parameters["lock_ttl_s"].default == limits.DEPLOY_LOCK_S


@pytest.fixture
def docker_settings(settings: Settings, docker_env: DockerEnv) -> Iterator[Settings]:
    with docker_env.connected(stop_deployed_in=settings.workdir):  # what the deploys leave live is stopped after
        yield settings.with_(docker_host=docker_env.url, registry=docker_env.registry,
                             base_image=docker_env.base_image)


@pytest.fixture
def docker_worker(docker_settings: Settings) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """`orchestra worker` processes that reach the test's Docker engine and registry."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        env = {**orchestra_env(docker_settings), "DOCKER_HOST": docker_settings.docker_host or "",
               "ORCHESTRA_REGISTRY": docker_settings.registry, "ORCHESTRA_BASE_IMAGE": docker_settings.base_image}
        proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _version(url: str) -> str:
    with urllib.request.urlopen(url + "/", timeout=5) as response:
        return str(json.loads(response.read())["version"])


@pytest.mark.docker
def test_cancel_of_a_running_canary_rolls_back_before_the_lock_goes(
        redis: Redis, docker_settings: Settings, docker_env: DockerEnv, tmp_path: Path,
        docker_worker: Callable[[], subprocess.Popen[bytes]], router_thread: Callable[[Graph], Router]) -> None:
    repo = sample_repo(tmp_path / "repo", {"api": []})
    config_file = repo / "devops_orchestra.yaml"
    config_file.write_text(config_file.read_text().replace("analysis_interval: 1s", "analysis_interval: 4s")
                           + "observability:\n  tools: []\n")  # no canary analysis: the health judge passes each step
    client = docker_env.client()
    images = {}
    for version in ("v1", "v2"):
        request = BuildRequest("shop", version, tmp_path / "out", Images(python=docker_env.base_image))
        images[version] = build_service(client, ServiceSpec("api", plain_app(tmp_path / version, marker=version), 8000),
                                        request, settings=docker_settings)
    client.close()
    before = Run(requested_by="U0ALICE", repo=str(repo), services=["api"], env="staging")
    ctx = AgentContext(run=before, settings=docker_settings, redis=redis, bus=EventBus(redis), workspace=repo,
                       config=load_config(repo), actor="deploy")
    assert deploy_agent.run(ctx, images={"api": images["v1"]}).passed  # v1 is live
    url = get_live(redis, "api", "staging").url  # type: ignore[union-attr]

    graph = Graph((replace(DEPLOY, approval=False),))
    canary = Intent(kind=IntentKind.DEPLOY, service="api", env="staging", strategy="canary", user="U0ALICE")
    run = dispatch(canary, redis=redis, settings=docker_settings, repo=repo, graph=graph)
    behind = dispatch(canary.model_copy(update={"user": "U0BOB"}), redis=redis, settings=docker_settings,
                      repo=repo, graph=graph)
    EventBus(redis).emit(run.id, EventType.BUILD_READY, "build", images={"api": images["v2"]}, passed=True)
    docker_worker()
    router_thread(graph)

    def at_ten_percent() -> bool:
        return any(e.get("phase") == "shift" and e.get("step") == 1
                   for e in events(redis, run.id, EventType.DEPLOYMENT_PROGRESS))

    wait_for(at_ten_percent, timeout=120, interval=0.1, what="the canary's first step")
    assert Counter(_version(url) for _ in range(40))["v2"] > 0  # the canary gets traffic
    cancel.handle(Intent(kind=IntentKind.CANCEL, user="U0ALICE", source="slack"), Who("U0ALICE"), redis=redis,
                  settings=docker_settings, run_id=run.id)
    # the run still owns its lock while it rolls back (a canary pause's check rolls back within about a second
    # of the cancel, so this looks at once; the order below shows the lock went only after the rollback)
    assert RunStore(redis).get(run.id).status == RunStatus.RUNNING
    assert Locks(redis).holder("api", "staging").run_id == run.id  # type: ignore[union-attr]
    wait_for(lambda: RunStore(redis).get(run.id).status.finished, timeout=60, interval=0.1, what="the run to end")
    ended = RunStore(redis).get(run.id)
    assert ended.status == RunStatus.CANCELLED and ended.reason is not None
    assert ended.reason.startswith("cancelled by U0ALICE: ") and "before moving api's traffic" in ended.reason
    shifts = [e["step"] for e in events(redis, run.id, EventType.DEPLOYMENT_PROGRESS) if e.get("phase") == "shift"]
    assert shifts == [1]  # the 50 % step never happened
    assert Counter(_version(url) for _ in range(40)) == Counter({"v1": 40})  # rolled back
    stream = EventBus(redis).replay(run.id)
    failed = next(i for i, e in enumerate(stream) if e.type == EventType.DEPLOYMENT_FAILED)
    assert failed < next(i for i, e in enumerate(stream) if e.type == EventType.RUN_FINISHED)
    wait_for(lambda: events(redis, behind.id, EventType.LOCK_GRANTED), timeout=10, what="the next run's turn")
    granted = next(e for e in EventBus(redis).replay(behind.id) if e.type == EventType.LOCK_GRANTED)
    assert granted.ts >= (ended.finished_at or 0)  # the lock went only after the rollback
    actions = [(a["action"], a["run_id"]) for a in Audit(redis).entries()]
    assert actions.index(("run_cancel_requested", run.id)) < actions.index(("run_finished", run.id)) \
        < actions.index(("lock_handed_on", behind.id))
