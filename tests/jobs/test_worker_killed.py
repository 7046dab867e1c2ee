"""A worker killed mid-job (SIGKILL) ends the run as failed, with an event saying why, never as silence."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from jobs.dispatch import dispatch
from jobs.router import Router
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import RunStatus, RunStore
from tests.support.files import write_files
from tests.support.processes import kill_tree
from tests.support.services import wait_for


@pytest.fixture
def slow_repo(tmp_path: Path) -> Path:
    return write_files(tmp_path / "slowpoke", {
        "requirements.txt": "",
        "slowpoke.py": "def answer() -> int:\n    return 42\n",
        "tests/test_slow.py": "import time\n\nfrom slowpoke import answer\n\n\ndef test_takes_its_time():\n"
                              "    time.sleep(120)\n    assert answer() == 42\n",
    })


@pytest.fixture
def router(redis: Redis, settings: Settings) -> Iterator[Router]:
    """A router in this process, as another worker machine would run it."""
    stop = threading.Event()
    router = Router(redis, settings, name="survivor")
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    yield router
    stop.set()
    thread.join(timeout=10)


def test_killing_the_worker_mid_stage_fails_the_run_with_an_event(
        redis: Redis, settings: Settings, slow_repo: Path, router: Router,
        start_worker: Callable[..., object]) -> None:
    worker = start_worker("--no-router")
    intent = Intent(kind=IntentKind.DEPLOY, user="U0ALICE", source="cli", env="staging")
    run = dispatch(intent, redis=redis, settings=settings, repo=slow_repo)
    bus = EventBus(redis)

    def running_tests() -> bool:
        return any(e.type == EventType.PROGRESS and "running tests" in e.data.get("message", "")
                   for e in bus.replay(run.id))

    try:
        wait_for(running_tests, timeout=120, interval=0.2, what="the test stage running")
    except TimeoutError:
        pytest.fail(f"the test stage never ran; events: {[(e.type, e.data) for e in bus.replay(run.id)]}")
    kill_tree(worker.pid)  # the worker, its work horse, the tests it runs
    worker.wait(timeout=10)

    def finished() -> bool:  # the run_finished event is the last thing the router does
        return any(e.type == EventType.RUN_FINISHED for e in bus.replay(run.id))

    wait_for(finished, timeout=60, interval=0.2, what="the run to end")
    events = bus.replay(run.id)
    failed = [e for e in events if e.type == EventType.STAGE_FAILED]
    assert len(failed) == 1 and failed[0].data["stage"] == "test"
    assert "stopped in the middle" in failed[0].data["reason"]
    assert events[-1].type == EventType.RUN_FINISHED
    assert events[-1].data["status"] == "failed"
    assert RunStore(redis).get(run.id).status == RunStatus.FAILED
