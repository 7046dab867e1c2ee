"""The RQ queue the agents work from."""
from __future__ import annotations

from redis import Redis
from rq import Callback, Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from jobs.graph import Stage

QUEUE_NAME = "orchestra"
HOUSEKEEPING_TIMEOUT_S = 300
UNFINISHED = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


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


def enqueue_housekeeping(queue: Queue, func: str) -> Job | None:
    """Enqueue a periodic clean-up job unless the last one is still waiting or running."""
    job_id = f"housekeeping-{func.rsplit('.', 1)[-1]}"  # RQ ids: letters, digits, _ and - only
    try:
        if Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer).get_status() in UNFINISHED:
            return None
    except NoSuchJobError:
        pass
    return queue.enqueue(func, job_id=job_id, job_timeout=HOUSEKEEPING_TIMEOUT_S, result_ttl=600, failure_ttl=3600,
                         description=func)


def live_workers(redis: Redis) -> list[BaseWorker]:
    """Workers currently registered on the stage queue."""
    return [w for w in Worker.all(connection=redis) if QUEUE_NAME in w.queue_names()]
