"""The router's housekeeping: one clean-up job at a time, run by a real worker, not by the router itself."""
from __future__ import annotations

import subprocess
from collections.abc import Callable

from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.queue import enqueue_housekeeping, stage_queue
from tests.support.services import wait_for

CLEANUP = "jobs.tasks.stop_expired_releases"


def test_one_cleanup_job_waits_at_a_time_and_a_worker_runs_it(
        redis: Redis, start_worker: Callable[..., subprocess.Popen[bytes]]) -> None:
    queue = stage_queue(redis)
    first = enqueue_housekeeping(queue, CLEANUP)
    assert first is not None
    assert enqueue_housekeeping(queue, CLEANUP) is None  # the first is still waiting
    worker = start_worker("--burst", "--no-router")
    assert worker.wait(timeout=60) == 0
    job = Job.fetch(first.id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == []  # nothing was live to stop
    again = wait_for(lambda: enqueue_housekeeping(queue, CLEANUP), what="a new clean-up once the last one ended")
    assert again.id == first.id  # the same id: a fresh run of the one clean-up job
