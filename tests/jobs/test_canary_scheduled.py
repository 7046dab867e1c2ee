"""A canary's pauses hold no worker: its steps go on in scheduled checks, from the intent it recorded.

Real dockerd, registry and nginx edges, a real router thread and real `orchestra worker` processes. Each test
deploys v1 of its services, then dispatches canary runs of v2 (steps 10, 50, 100, health-checked between
steps): with one worker, another run's first stage starts during the canary's pause; a worker SIGKILLed in
the middle of a check is followed by the check fired again, which goes on where the intent says; a cancel
in a pause rolls back at once; a group goes on service by service in checks, and a failing verdict of its
second service rolls both back and fails the stage as the in-job canary does.
The last tests take one check's decision alone (real Redis, the lock and the intent; the traffic split
recorded): a check fired early waits out its pause unjudged, inconclusive answers are counted in the intent
and asked again a pause later before they fail the step, and a pass is written with the next weight.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import docker
import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from agents.build.dockerfile import Images
from agents.build.service import BuildRequest, ServiceSpec, build_service
from agents.context import AgentContext
from agents.deploy import intent
from agents.deploy import stage as deploy_agent
from agents.deploy.strategies import MAX_INCONCLUSIVE, CanaryFailed, Paused, Shift, TrafficStep, go_on
from agents.deploy.targets.docker import LABEL
from agents.deploy.targets.edge import Edge
from agents.deploy.targets.state import Release, get_live
from handlers import cancel
from handlers.reply import Who
from jobs import timers
from jobs.dispatch import dispatch
from jobs.graph import DEPLOY, Graph
from jobs.queue import stage_queue
from jobs.router import Router
from orchestra.config import load_config
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import Fence, Locks
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.jobs.conftest import orchestra_env
from tests.support.docker_services import DockerEnv
from tests.support.processes import kill_tree
from tests.support.sample_apps import plain_app, sample_repo
from tests.support.services import wait_for

pytestmark = pytest.mark.docker
ENV = "staging"
GRAPH = Graph((replace(DEPLOY, approval=False),))  # the images are built once for the module


@pytest.fixture(scope="module")
def images(docker_env: DockerEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    root = tmp_path_factory.mktemp("paced-images")
    settings = Settings(registry=docker_env.registry, base_image=docker_env.base_image)
    client, built = docker_env.client(), {}
    for version in ("v1", "v2"):
        request = BuildRequest("paced", version, root / "out", Images(python=docker_env.base_image))
        built[version] = build_service(client, ServiceSpec("app", plain_app(root / version, marker=version), 8000),
                                       request, settings=settings)
    client.close()
    return built


class Shop:
    """A repository of services at v1 (deployed in-process), a router thread and worker processes."""

    def __init__(self, redis: Redis, settings: Settings, docker_env: DockerEnv, images: dict[str, dict[str, str]],
                 path: Path, services: list[str], pause: str, depends: dict[str, list[str]]) -> None:
        self.redis, self.settings, self.images = redis, settings, images
        self.repo = sample_repo(path, {s: depends.get(s, []) for s in services})
        config = self.repo / "devops_orchestra.yaml"  # no metrics: the health judge decides each step
        config.write_text(config.read_text().replace("analysis_interval: 1s", f"analysis_interval: {pause}")
                          + "observability:\n  tools: []\n")
        self.client = docker_env.client()
        first = Run(requested_by="U0ALICE", repo=str(self.repo), services=services, env=ENV)
        ctx = AgentContext(run=first, settings=settings, redis=redis, bus=EventBus(redis), workspace=self.repo,
                           config=load_config(self.repo), actor="deploy")
        assert deploy_agent.run(ctx, images={s: images["v1"] for s in services}, client=self.client).passed
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=Router(redis, settings, graph=GRAPH, name="paced").run,
                                       args=(self.stop,), daemon=True)
        self.thread.start()

    def worker(self) -> subprocess.Popen[bytes]:
        env = {**orchestra_env(self.settings), "DOCKER_HOST": self.settings.docker_host or "",
               "ORCHESTRA_REGISTRY": self.settings.registry, "ORCHESTRA_BASE_IMAGE": self.settings.base_image}
        proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router"], env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.workers.append(proc)
        return proc

    def deploy(self, service: str | list[str], version: str, strategy: str = "canary") -> str:
        services = [service] if isinstance(service, str) else service
        run = dispatch(Intent(kind=IntentKind.DEPLOY, service=services[0], services=services, env=ENV,
                              strategy=strategy, user="U0ALICE"),
                       redis=self.redis, settings=self.settings, repo=self.repo, graph=GRAPH)
        EventBus(self.redis).emit(run.id, EventType.BUILD_READY, "build",
                                  images={s: self.images[version] for s in services}, passed=True)
        return run.id

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.close()


@pytest.fixture
def shop(redis: Redis, settings: Settings, docker_env: DockerEnv, images: dict[str, dict[str, str]],
         tmp_path: Path) -> Iterator[Callable[..., Shop]]:
    made: list[Shop] = []
    docker_settings = settings.with_(docker_host=docker_env.url, registry=docker_env.registry,
                                     base_image=docker_env.base_image)

    def make(services: list[str], pause: str = "1s", depends: dict[str, list[str]] | None = None) -> Shop:
        made.append(Shop(redis, docker_settings, docker_env, images, tmp_path / "shop", services, pause,
                         depends or {}))
        return made[-1]

    with docker_env.connected(stop_deployed_in=docker_settings.workdir):
        yield make
        for one in made:
            one.close()


def events(redis: Redis, run_id: str, kind: EventType) -> list[Any]:
    return [e for e in EventBus(redis).replay(run_id) if e.type == kind]


def shifts(redis: Redis, run_id: str) -> list[tuple[int, dict[str, int]]]:
    return [(e.data["step"], e.data["weights"]) for e in events(redis, run_id, EventType.DEPLOYMENT_PROGRESS)
            if e.data.get("phase") == "shift"]


def ended(redis: Redis, run_id: str, timeout: float = 30) -> Run:
    wait_for(lambda: RunStore(redis).get(run_id).status.finished, timeout=timeout, interval=0.05,
             what=f"run {run_id} to end")
    return RunStore(redis).get(run_id)


def serves_only(redis: Redis, client: docker.DockerClient, service: str, version: str, gone: str | None) -> None:
    """All of ``service``'s traffic on ``version``, nothing left to reconcile, no container of ``gone``."""
    state = get_live(redis, service, ENV)
    assert state is not None and state.current is not None and state.current.version == version, state
    assert state.weights == {version: 100}
    assert intent.get(redis, service, ENV) is None
    if gone is not None:
        assert not client.containers.list(all=True, filters={"label": [f"{LABEL}={service}",
                                                                       f"orchestra.version={gone}"]})


def test_with_one_worker_another_run_starts_while_a_canary_pauses(shop: Callable[..., Shop], redis: Redis) -> None:
    s = shop(["api", "web"], pause="2s")  # in a job, the canary would hold the worker >= 4 s
    s.worker()
    a = s.deploy("api", "v2")
    wait_for(lambda: timers.pending(redis, a, "deploy"), timeout=30, interval=0.02, what="the canary's first pause")
    assert [w for _, w in shifts(redis, a)] == [{"v1": 90, "v2": 10}]
    requested = time.time()
    b = s.deploy("web", "v2", strategy="blue-green")
    wait_for(lambda: events(redis, b, EventType.STAGE_STARTED), timeout=10, interval=0.02, what="b's first stage")
    waited = events(redis, b, EventType.STAGE_STARTED)[0].ts - requested
    live = get_live(redis, "api", ENV)
    assert live is not None and live.weights.get("v2") in (10, 50), live  # a was still in its canary
    print(f"b's first stage started {waited:.2f}s after its request, a at {live.weights}")
    assert waited < 2.0
    assert ended(redis, a).status == RunStatus.SUCCEEDED
    assert ended(redis, b).status == RunStatus.SUCCEEDED
    assert shifts(redis, a) == [(1, {"v1": 90, "v2": 10}), (2, {"v1": 50, "v2": 50}), (3, {"v1": 0, "v2": 100})]
    result = events(redis, a, EventType.DEPLOYMENT_SUCCEEDED)[0].data
    assert result["verdicts"] == {"api": [{"step": 1, "weight": 10, "verdict": "pass"},
                                          {"step": 2, "weight": 50, "verdict": "pass"}]}
    serves_only(redis, s.client, "api", "v2", None)

    def held_by_a() -> dict[str, float] | None:
        """How long each of a's jobs held the worker, once its last check is recorded as finished (the worker
        records that after the job's own events, so the run can end first)."""
        jobs = [Job.fetch(j, connection=redis, serializer=JSONSerializer)
                for j in FinishedJobRegistry(queue=stage_queue(redis)).get_job_ids()]
        held = {j.id: (j.ended_at - j.started_at).total_seconds() for j in jobs if j.meta.get("run_id") == a
                and j.ended_at and j.started_at}
        return held if sum(j.startswith("check-") for j in held) >= 2 else None
    held: Any = wait_for(held_by_a, timeout=10, interval=0.05, what="a's two checks finished")
    checks = [t for j, t in held.items() if j.startswith("check-")]
    print(f"a held the worker {sum(held.values()):.2f}s in {len(held)} jobs (checks: {sorted(checks)})")
    assert len(checks) >= 2 and max(checks) < 1.0 and sum(held.values()) < 4.0


def test_a_worker_killed_in_a_check_between_its_intent_and_its_move_is_followed_by_the_check_going_on(
        shop: Callable[..., Shop], redis: Redis) -> None:
    s = shop(["api"], pause="1s")
    victim = s.worker()
    run_id = s.deploy("api", "v2")
    wait_for(lambda: timers.pending(redis, run_id, "deploy"), timeout=30, interval=0.02, what="the first pause")
    state = get_live(redis, "api", ENV)
    assert state is not None
    nginx = Edge(Path(state.edge_prefix), state.edge_port).pid()
    assert nginx is not None
    os.kill(nginx, signal.SIGSTOP)  # a stalled edge: the check's reload waits, its intent already written
    try:
        wait_for(lambda: (left := intent.get(redis, "api", ENV)) is not None and left.step == 2,
                 timeout=15, interval=0.01, what="the check to record the 50% step")
        kill_tree(victim.pid)
        killed = time.monotonic()
        victim.wait(timeout=10)
    finally:
        os.kill(nginx, signal.SIGCONT)  # it loads the config the killed check wrote: 50%, unrecorded
    left, live = intent.get(redis, "api", ENV), get_live(redis, "api", ENV)
    assert left is not None and live is not None
    assert (left.step, left.weight, live.weights) == (2, 50, {"v1": 90, "v2": 10})
    s.worker()
    run = ended(redis, run_id, timeout=60)
    assert run.status == RunStatus.SUCCEEDED, run.reason
    print(f"killed between the intent (step 2, 50%) and the move: the run went on and succeeded "
          f"{time.monotonic() - killed:.1f}s after the SIGKILL")
    assert shifts(redis, run_id) == [(1, {"v1": 90, "v2": 10}), (2, {"v1": 50, "v2": 50}), (3, {"v1": 0, "v2": 100})]
    result = events(redis, run_id, EventType.DEPLOYMENT_SUCCEEDED)[0].data
    assert [v["step"] for v in result["verdicts"]["api"]] == [1, 2]  # none judged twice, none skipped
    serves_only(redis, s.client, "api", "v2", None)


def test_cancel_in_a_pause_rolls_back_at_once(shop: Callable[..., Shop], redis: Redis) -> None:
    s = shop(["api"], pause="60s")
    s.worker()
    run_id = s.deploy("api", "v2")
    wait_for(lambda: timers.pending(redis, run_id, "deploy"), timeout=30, interval=0.02, what="the first pause")
    asked = time.monotonic()
    cancel.handle(Intent(kind=IntentKind.CANCEL, user="U0ALICE", source="slack"), Who("U0ALICE"), redis=redis,
                  settings=s.settings, run_id=run_id)
    run = ended(redis, run_id, timeout=15)
    took = time.monotonic() - asked
    print(f"cancelled in a 60 s pause: rolled back and ended {took:.1f}s after the cancel")
    assert run.status == RunStatus.CANCELLED and "before moving api's traffic" in (run.reason or ""), run.reason
    assert took < 5
    assert [step for step, _ in shifts(redis, run_id)] == [1]
    serves_only(redis, s.client, "api", "v1", "v2")
    assert not timers.pending(redis, run_id, "deploy")


def test_a_group_goes_on_service_by_service_in_checks_and_a_later_failure_rolls_the_first_back(
        shop: Callable[..., Shop], redis: Redis) -> None:
    s = shop(["back", "front"], depends={"front": ["back"]})
    s.worker()
    run_id = s.deploy(["back", "front"], "v2")

    def front_pauses() -> bool:
        left = intent.get(redis, "front", ENV)
        return left is not None and left.phase == intent.SHIFTING and timers.pending(redis, run_id, "deploy")

    wait_for(front_pauses, timeout=30, interval=0.02, what="front's canary to pause, back live")
    back = intent.get(redis, "back", ENV)
    assert back is not None and back.phase == intent.LIVE  # went live in a check; kept until the group ends
    front = intent.get(redis, "front", ENV)
    assert front is not None
    s.client.containers.get(front.new.container).stop(timeout=1)
    run = ended(redis, run_id)
    assert run.status == RunStatus.FAILED
    failed = events(redis, run_id, EventType.DEPLOYMENT_FAILED)[0].data
    assert failed["summary"] == f"deploy of front to {ENV} failed: canary step 1 (10% on v2) judged fail"
    assert failed["failed"] == "front" and failed["rolled_back"] == ["back"]
    rolled = [e.data for e in events(redis, run_id, EventType.ROLLBACK_EVENT)]
    assert [(r["service"], r["from_version"], r["to_version"]) for r in rolled] == [("back", "v2", "v1")]
    assert [step for step, _ in shifts(redis, run_id)] == [1, 2, 3, 1]  # back's three steps, front's first
    for service in ("back", "front"):
        serves_only(redis, s.client, service, "v1", "v2")
    assert not timers.pending(redis, run_id, "deploy")


def _paced_shift(redis: Redis, moves: list[int]) -> Shift:
    """A canary of backend at step 1 (10%), its run holding the lock, the traffic split recording its moves."""
    run = Run(requested_by="U0ALICE", repo="/r", services=["backend"], env=ENV)
    fence = Fence(redis, run.id, ENV, Locks(redis).admit(run, ttl_s=60).fence)

    class Recorded:
        def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
            moves.append(weight)
            return {new.version: weight, **({old.version: 100 - weight} if old else {})}

    shift = Shift(Recorded(), Release(version="v2", image="api:v2", container="c2", port=1, run_id=run.id),
                  Release(version="v1", image="api:v1", container="c1", port=2, run_id="r-before"),
                  lambda step, split: None, service="backend", env=ENV, fence=fence)
    shift.to(10, step=1)
    return shift


def test_a_check_fired_before_its_pause_is_over_waits_out_the_rest_without_judging(redis: Redis) -> None:
    moves: list[int] = []
    shift = _paced_shift(redis, moves)
    left = intent.get(redis, "backend", ENV)
    assert left is not None
    asked: list[int] = []

    def judge(step: TrafficStep) -> str:
        asked.append(step.step)
        return "pass"

    at = left.updated_at + 12
    with pytest.raises(Paused) as paused:
        go_on(shift, [10, 50, 100], judge, step=1, weight=10, since=left.updated_at, asked=0, applied=True,
              pause_s=30, clock=lambda: at)
    assert paused.value.after_s == pytest.approx(18) and asked == [] and moves == [10]


def test_inconclusive_answers_are_asked_again_after_a_pause_each_then_fail_the_step(redis: Redis) -> None:
    moves: list[int] = []
    shift = _paced_shift(redis, moves)
    for count in range(MAX_INCONCLUSIVE):
        left = intent.get(redis, "backend", ENV)
        assert left is not None and left.asked == count
        with pytest.raises(Paused) as paused:
            go_on(shift, [10, 50, 100], lambda step: "inconclusive", step=1, weight=10, since=left.updated_at,
                  asked=left.asked, applied=True, pause_s=1, clock=partial(float, left.updated_at + 1))
        assert (paused.value.step, paused.value.after_s) == (1, 1)
    left = intent.get(redis, "backend", ENV)
    assert left is not None and left.asked == MAX_INCONCLUSIVE
    last = left.updated_at + 1
    with pytest.raises(CanaryFailed, match=r"canary step 1 \(10% on v2\) judged inconclusive"):
        go_on(shift, [10, 50, 100], lambda step: "inconclusive", step=1, weight=10, since=left.updated_at,
              asked=left.asked, applied=True, pause_s=1, clock=lambda: last)
    assert moves == [10]  # never moved on


def test_a_pass_records_its_verdict_with_the_next_weight_in_one_write(redis: Redis) -> None:
    moves: list[int] = []
    shift = _paced_shift(redis, moves)
    left = intent.get(redis, "backend", ENV)
    assert left is not None
    over = left.updated_at + 1
    with pytest.raises(Paused):
        go_on(shift, [10, 50, 100], lambda step: "pass", step=1, weight=10, since=left.updated_at, asked=0,
              applied=True, pause_s=1, clock=lambda: over)
    now = intent.get(redis, "backend", ENV)
    assert now is not None and (now.step, now.weight, now.asked) == (2, 50, 0)
    assert now.verdicts == [{"step": 1, "weight": 10, "verdict": "pass"}] and moves == [10, 50]
