"""A stage job whose worker is SIGKILLed between taking it from the queue and starting it is not lost.

A real RQ worker process dies by SIGKILL at the exact point RQ has moved the job id to the queue's
intermediate list and has not yet marked it started (what a failover between the two writes leaves
too); the real router, ticking in a thread, puts it back, and a real `orchestra worker` then runs it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Worker, get_current_job
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from agents.context import StageResult
from jobs.graph import TEST, Graph
from jobs.lost import LOST_AFTER_S
from jobs.queue import stage_queue
from jobs.router import Router
from jobs.runner import execute_stage
from orchestra.events import EventBus, EventType
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, Run, RunStatus, RunStore
from tests.support.services import wait_for


def quick(run_id: str) -> dict[str, Any]:
    """A stage that only says it ran (and counts its runs)."""
    job = get_current_job()
    assert job is not None
    job.connection.incr(f"test:ran:{run_id}")
    return execute_stage(run_id, QUICK, lambda ctx: StageResult(True, "ran"))


QUICK = replace(TEST, func="tests.jobs.test_lost_job.quick", retries=0)


class DiesTakingAJob(Worker):
    """RQ's worker, SIGKILLed after the dequeue (job id moved to the intermediate list) and before the start
    (``execute_job`` is what the worker's loop calls next, in the worker's own process)."""

    def execute_job(self, job: Job, queue: Queue) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def die_taking_a_job(url: str) -> None:
    redis = Redis.from_url(url)
    DiesTakingAJob([stage_queue(redis)], connection=redis, serializer=JSONSerializer).work(burst=True)


def test_a_job_whose_worker_was_killed_as_it_took_it_is_queued_again_and_runs(
        redis: Redis, settings: Settings, demo_repo: Path,
        start_worker: Callable[..., subprocess.Popen[bytes]]) -> None:
    router = Router(redis, settings, graph=Graph((QUICK,)), name="test-router")
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo=str(demo_repo), services=["backend"]))
    router.start(run)
    job_id = RunStore(redis).get(run.id).job_id
    queue = stage_queue(redis)

    taker = subprocess.run([sys.executable, "-c", "import sys; from tests.jobs.test_lost_job import "
                            "die_taking_a_job as d; d(sys.argv[1])", settings.redis_url], cwd=PROJECT_ROOT)
    assert taker.returncode == -signal.SIGKILL
    killed_at = time.monotonic()
    job = Job.fetch(str(job_id), connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.QUEUED and job.started_at is None
    assert queue.job_ids == [] and redis.lrange(queue.intermediate_queue_key, 0, -1) == [job.id.encode()]

    stop = threading.Event()
    ticking = threading.Thread(target=router.run, args=(stop,), daemon=True)
    ticking.start()
    try:
        # at the head of the queue (the router's housekeeping job may be behind it), once
        wait_for(lambda: queue.job_ids[:1] == [job.id], timeout=LOST_AFTER_S + 10, interval=0.2,
                 what="the router putting the job back in the queue")
        requeued_after = time.monotonic() - killed_at
        assert queue.job_ids.count(job.id) == 1
        assert redis.llen(queue.intermediate_queue_key) == 0
        start_worker("--no-router", settings=settings)
        wait_for(lambda: RunStore(redis).get(run.id).status.finished, timeout=60, interval=0.2,
                 what=f"run {run.id} finishing")
    finally:
        stop.set()
        ticking.join(timeout=10)
    assert RunStore(redis).get(run.id).status == RunStatus.SUCCEEDED
    assert redis.get(f"test:ran:{run.id}") == b"1"  # once: put back once, taken once
    [said] = [e.data for e in EventBus(redis).replay(run.id)
              if e.type == EventType.PROGRESS and e.data.get("kind") == "stage_requeued"]
    assert said["job_id"] == job.id and "lost on the way to a worker" in said["message"]
    assert [e for e in Audit(redis).entries() if e["action"] == "stage_requeued"][0]["run_id"] == run.id
    print(f"worker SIGKILLed between dequeue and start -> job back in the queue after {requeued_after:.1f} s")
