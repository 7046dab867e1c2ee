"""Stage jobs lost between RQ's queue and a worker: put back in the queue, and said so.

RQ's worker takes a job by moving its id from the queue to the queue's intermediate list (BLMOVE), then,
in a second step, marks it started. A worker killed between the two (SIGKILL, the OOM killer), or a
Redis master that fails over after the first reached the replica and before the second did, leaves a job
that is ``queued`` but in no queue: no worker will take it, and the run would wait on it for ever (RQ's
own clean-up fails it only after a minute, at its maintenance, every ten). Such a job never started, so
running it is safe: the router's reaper (:func:`requeue_if_lost`) puts it back at the head of its queue.

A live worker holds a job in that state for a few milliseconds, so the job is put back only when the
router finds it so twice, ``LOST_AFTER_S`` apart, and the checks and the move are one Lua step. A job
whose execution RQ recorded in its started registry (the worker died a moment later, before its work
horse marked it started) is left to RQ, which fails it as abandoned, and to the reaper, which then fails
the stage: it may have begun.
"""
from __future__ import annotations

import logging
import time

from redis import Redis
from rq import Queue
from rq.job import Job

from orchestra.events import EventBus, EventType
from orchestra.store import AUDIT_STREAM, audit_entry

logger = logging.getLogger(__name__)

LOST_AFTER_S = 5.0
LOST_KEY = "orchestra:lost-job:{job_id}"  # when the router first saw the queued job in no queue


def requeue_if_lost(redis: Redis, queue: Queue, job: Job, run_id: str, stage: str) -> bool:
    """Put ``job`` (queued, of ``run_id``'s ``stage``) back in ``queue`` if it is in no queue; True if it was.

    The move and its audit entry are one step; the run's events get a progress event, so a lost job is
    seen even though nothing else changes.
    """
    if job.id in queue.started_job_registry:  # its worker began it: RQ fails it as abandoned, the reaper the stage
        return False
    entry = audit_entry("stage_requeued", actor="orchestra", run_id=run_id, stage=stage, job_id=job.id)
    moved = redis.eval(_REQUEUE_IF_LOST, 5, job.key, queue.key, queue.intermediate_queue_key,
                       LOST_KEY.format(job_id=job.id), AUDIT_STREAM, job.id, time.time(), LOST_AFTER_S,
                       *[x for pair in entry.items() for x in pair])
    if not moved:
        return False
    logger.warning("run %s: job %s of %s was queued but in no queue (its worker died as it took it, or Redis "
                   "failed over meanwhile); put back in the queue", run_id, job.id, stage)
    EventBus(redis).emit(run_id, EventType.PROGRESS, "orchestra", kind="stage_requeued", stage=stage,
                         job_id=job.id, message=f"{stage}: its job was lost on the way to a worker (a worker "
                                                "killed as it took it, or a Redis failover); queued again")
    return True


# KEYS: the job's hash, the queue, its intermediate list, the lost mark, the audit stream.
# ARGV: job id, now, LOST_AFTER_S, then the audit entry's fields and values.
_REQUEUE_IF_LOST = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' or redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('DEL', KEYS[4])
  return 0
end
local seen = redis.call('GET', KEYS[4])
if not seen then
  redis.call('SET', KEYS[4], ARGV[2], 'EX', 3600)
  return 0
end
if tonumber(ARGV[2]) - tonumber(seen) < tonumber(ARGV[3]) then return 0 end
redis.call('LREM', KEYS[3], 0, ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('XADD', KEYS[5], '*', unpack(ARGV, 4))
return 1
"""
