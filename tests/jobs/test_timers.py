"""A stage that goes on in scheduled checks holds no worker: real Redis, real `orchestra worker` processes
(one, where it matters), the real router and real SIGKILLs. The stage here stands in for the watch: it
begins, then looks again on a timer until it concludes; each look is a short job of its own."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from agents.context import AgentContext, StageResult
from jobs import timers
from jobs.graph import Graph, Stage
from jobs.queue import stage_queue
from jobs.router import Router, start_run
from jobs.runner import execute_check, execute_stage
from orchestra.events import EventBus, EventType
from orchestra.settings import Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.support.processes import kill_tree
from tests.support.services import wait_for


def begin_watch(run_id: str) -> dict[str, Any]:
    return execute_stage(run_id, WATCH, lambda ctx: StageResult(True, "watching", later_s=_plan(ctx)["every"]))


def look_watch(run_id: str) -> dict[str, Any]:
    return execute_check(run_id, WATCH, _look)


def _plan(ctx: AgentContext) -> dict[str, Any]:
    return {"looks": 5, "every": 0.2, "sleep_on": [], **json.loads(ctx.redis.get(f"test:plan:{ctx.run.id}") or "{}")}


def _look(ctx: AgentContext) -> StageResult:
    plan, looks = _plan(ctx), int(ctx.redis.incr(f"test:looks:{ctx.run.id}"))
    if looks in plan["sleep_on"]:
        time.sleep(60)  # killed here
    if looks >= plan["looks"]:
        return StageResult(True, f"concluded after {looks} looks")
    return StageResult(True, "watching", later_s=plan["every"])


WATCH = Stage("watch", "tests.jobs.test_timers.begin_watch", EventType.OBSERVATION_PASSED,
              failed=EventType.OBSERVABILITY_ALERT, timeout=120, kinds=frozenset({"validate"}),
              check="tests.jobs.test_timers.look_watch")
GRAPH = Graph((WATCH,))


@dataclass
class World:
    redis: Redis
    settings: Settings
    repo: Path

    def start(self, **plan: object) -> tuple[str, float]:
        """A run of the watch stage; (run id, when it was started)."""
        run = RunStore(self.redis).create(Run(kind="validate", requested_by="alice", repo=str(self.repo)))
        self.redis.set(f"test:plan:{run.id}", json.dumps(plan))
        started = time.time()
        start_run(self.redis, self.settings, run, graph=GRAPH)
        return run.id, started

    def looks(self, run_id: str) -> int:
        return int(self.redis.get(f"test:looks:{run_id}") or 0)

    def finished(self, run_id: str, timeout: float = 60) -> Run:
        return wait_for(lambda: (r := RunStore(self.redis).get(run_id)).status.finished and r, timeout=timeout,
                        what=f"run {run_id} to finish")

    def events(self, run_id: str, kind: EventType) -> list[Any]:
        return [e for e in EventBus(self.redis).replay(run_id) if e.type == kind]


@pytest.fixture
def world(redis: Redis, settings: Settings, tmp_path: Path) -> World:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("print('hello')\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t",
                                                                  "commit", "-qm", "first"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    return World(redis, settings, repo)


@pytest.fixture
def router(redis: Redis, settings: Settings) -> Iterator[Callable[..., None]]:
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(**options: Any) -> None:
        thread = threading.Thread(target=Router(redis, settings, graph=GRAPH, name="test-router", **options).run,
                                  args=(stop,), daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)


def test_a_second_run_starts_within_two_seconds_while_the_first_is_watching(
        world: World, router: Callable[..., None], start_worker: Callable[..., subprocess.Popen[bytes]]) -> None:
    start_worker("--no-router")  # one worker for both runs
    router()
    first, _ = world.start(looks=15, every=0.2)
    wait_for(lambda: world.looks(first) >= 3, timeout=30, what="the first run's watch to be looking")
    second, asked = world.start(looks=1)
    (started,) = wait_for(lambda: world.events(second, EventType.STAGE_STARTED), timeout=10,
                          what="the second run's first stage")
    assert started.ts - asked < 2.0, f"the second run's stage started {started.ts - asked:.1f}s after it was asked"
    assert world.finished(second).status == RunStatus.SUCCEEDED
    assert not RunStore(world.redis).get(first).status.finished  # still watching, on the same worker
    done = world.finished(first)
    assert (done.status, world.looks(first)) == (RunStatus.SUCCEEDED, 15)
    (result,) = world.events(first, EventType.OBSERVATION_PASSED)  # concluded exactly once
    assert result.data["summary"] == "concluded after 15 looks"


def test_a_look_killed_mid_check_is_taken_again_and_the_stage_concludes_once(
        world: World, router: Callable[..., None], start_worker: Callable[..., subprocess.Popen[bytes]]) -> None:
    worker = start_worker("--no-router")
    router()
    run_id, _ = world.start(looks=5, every=0.2, sleep_on=[3])
    wait_for(lambda: world.looks(run_id) >= 3, timeout=30, what="the third look")
    time.sleep(0.5)
    kill_tree(worker.pid)  # the worker and its work horse, mid-look
    worker.wait()
    killed = time.monotonic()
    start_worker("--no-router")
    done = world.finished(run_id, timeout=90)
    recovered = time.monotonic() - killed
    assert (done.status, world.looks(run_id)) == (RunStatus.SUCCEEDED, 5)
    assert recovered < timers.LEASE_S + timers.CHECK_LOCK_TTL_S + 15
    assert len(world.events(run_id, EventType.OBSERVATION_PASSED)) == 1
    assert not timers.pending(world.redis, run_id, WATCH.name)


def test_a_waiting_check_is_not_fired_twice(world: World, redis: Redis) -> None:
    queue = stage_queue(redis)
    timers.schedule(redis, WATCH.name, "r1", after_s=0)
    now = time.time()
    assert timers.fire_due(redis, queue, GRAPH, now=now) == [f"{WATCH.name}:r1"]
    assert timers.fire_due(redis, queue, GRAPH, now=now + 1) == []  # leased
    assert timers.fire_due(redis, queue, GRAPH, now=now + timers.LEASE_S + 1) == []  # its check still waits
    assert queue.count == 1
    timers.schedule(redis, "no-such-stage", "r2", after_s=0)
    assert timers.fire_due(redis, queue, GRAPH, now=now + 2 * timers.LEASE_S) == []  # dropped, said in the log
    assert not timers.pending(redis, "r2", "no-such-stage")


def test_a_stage_left_without_its_timer_fails_saying_why(world: World, router: Callable[..., None],
                                                         start_worker: Callable[..., subprocess.Popen[bytes]]) -> None:
    run_id, _ = world.start(looks=1000, every=30)  # begins, then would look in 30 s
    start_worker("--no-router")
    wait_for(lambda: timers.pending(world.redis, run_id, WATCH.name), timeout=30, what="the watch's timer")
    timers.cancel(world.redis, WATCH.name, run_id)  # the timer is lost (a Redis that lost its data)
    router(unconcluded_s=1.0)
    done = world.finished(run_id, timeout=30)
    assert done.status == RunStatus.FAILED and "nothing is scheduled to conclude it" in (done.reason or "")
