"""The RQ queue the agents work from."""
from __future__ import annotations

from redis import Redis
from rq import Callback, Queue, Retry, Worker
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from jobs.graph import Stage

QUEUE_NAME = "orchestra"


def stage_queue(redis: Redis) -> Queue:
    """The queue of stage jobs; job arguments are plain JSON."""
    return Queue(QUEUE_NAME, connection=redis, serializer=JSONSerializer)


def enqueue_stage(queue: Queue, run_id: str, stage: Stage, *, job_id: str) -> Job:
    """Enqueue one stage of a run with the stage's timeout and retry policy."""
    return queue.enqueue(
        stage.func, run_id,
        job_id=job_id,
        job_timeout=stage.timeout,
        retry=Retry(max=stage.retries) if stage.retries else None,
        on_failure=Callback("jobs.runner.on_stage_failure"),
        result_ttl=24 * 3600,
        failure_ttl=7 * 24 * 3600,
        description=f"{stage.name} for run {run_id}",
        meta={"run_id": run_id, "stage": stage.name},
    )


def live_workers(redis: Redis) -> list[BaseWorker]:
    """Workers currently registered on the stage queue."""
    return [w for w in Worker.all(connection=redis) if QUEUE_NAME in w.queue_names()]
