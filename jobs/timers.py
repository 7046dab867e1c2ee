"""Timers: the scheduled checks that carry a stage on without holding a worker (the watch).

A stage that goes on later (``StageResult.later_s``) gets a timer: a member ``<stage>:<run id>`` of one
Redis sorted set, scored with the time it is due. The router's tick (:meth:`jobs.router.Router.tick`)
claims due timers and enqueues one short check job for each: the stage's ``check`` entry point in the
graph, which runs :func:`jobs.runner.execute_check`.
Claiming moves the timer a lease ahead instead of removing it, so a check whose worker dies is simply
fired again when the lease runs out; the check itself moves the timer to its next look, or removes it
when the stage concludes. Two checks of one run never overlap (a per-run check lock).

Checks that belong to no stage use the same timers: the always-on watch has one per live service and
environment (member ``always-on:<service>:<env>``, its check ``jobs.tasks.always_on_check``), enrolled
by :func:`enrol_live` on the router's tick and run by :func:`run_timed` under the same check lock. So does
the scheduled drift check: one timer per served repository (member ``drift-check:<repo>``, its check
``jobs.tasks.drift_check``), enrolled by :func:`enrol_drift` when dispatch reads a configuration that asks for
it, and kept going by its own check while the configuration still asks (:mod:`jobs.drift_check`).
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from agents.observability import always_on
from jobs.graph import Graph
from orchestra.events import as_text
from orchestra.loops import repeating

logger = logging.getLogger(__name__)

TIMERS_KEY = "orchestra:timers"
CHECK_LOCK_KEY = "orchestra:check-lock:{member}"
LAST_CHECK_KEY = "orchestra:timer-checks"  # member -> the id of the last check job fired for it
LEASE_S = 15.0  # a claimed check that has not moved its timer by then is fired again
CHECK_TIMEOUT_S = 600  # one check: a look, or a look and a rollback
CHECK_LOCK_TTL_S = 15  # renewed while the check runs: a killed check frees its run this soon
FIRE_BATCH = 100
ALWAYS_ON = "always-on"
DRIFT_CHECK = "drift-check"
CHECKS = {ALWAYS_ON: "jobs.tasks.always_on_check",  # timers of no stage -> their check's entry point
          DRIFT_CHECK: "jobs.tasks.drift_check"}
ENROL_KEY = "orchestra:always-on:enrolling"  # set while one router's enrolment is fresh
ENROL_EVERY_S = 2  # how often the live state is compared with the always-on set
TIMED_RETRY_S = 30.0  # a non-stage check that raised looks again this soon
TIMED_LOCK_TTL_S = 6  # a non-stage check's lock: a killed one is fired again when its lease runs out

_UNLOCK_IF_OWNER = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_RENEW_IF_OWNER = ("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end "
                   "return 0")
# Claim the due timers: each moves a lease ahead, so another router (or this one's next tick) does not
# fire it again while its check runs.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member) end
return due
"""


def member(stage: str, run_id: str) -> str:
    return f"{stage}:{run_id}"


def schedule(redis: Redis, stage: str, run_id: str, *, after_s: float) -> None:
    """Look at ``stage`` of ``run_id`` again in ``after_s`` seconds."""
    redis.zadd(TIMERS_KEY, {member(stage, run_id): time.time() + max(after_s, 0.0)})


def cancel(redis: Redis, stage: str, run_id: str) -> None:
    redis.zrem(TIMERS_KEY, member(stage, run_id))
    redis.hdel(LAST_CHECK_KEY, member(stage, run_id))


def pending(redis: Redis, run_id: str, stage: str) -> bool:
    return redis.zscore(TIMERS_KEY, member(stage, run_id)) is not None


def fire_due(redis: Redis, queue: Queue, graph: Graph, *, now: float | None = None) -> list[str]:
    """Enqueue a check for every due timer (ahead of waiting stage jobs); returns the members fired.

    A timer whose last check still waits in the queue, or runs (its check lock held), is only leased
    again: a worker busy with a long build does not come back to a pile of checks of one run."""
    now = time.time() if now is None else now
    try:
        enrol_live(redis)
    except Exception:
        logger.exception("could not compare the live releases with the always-on watch's timers")
    fired = []
    for item in (as_text(m) for m in redis.eval(_CLAIM, 1, TIMERS_KEY, now, now + LEASE_S, FIRE_BATCH)):  # type: ignore[union-attr]
        if _in_hand(redis, queue, item):
            continue
        stage, _, run_id = item.partition(":")
        func = _check_of(graph, stage)
        if func is None:
            logger.error("run %s: a timer for %r, which has no scheduled check; dropped", run_id, stage)
            cancel(redis, stage, run_id)
            continue
        job_key = re.sub(r"[^A-Za-z0-9_-]", "_", f"{stage}-{run_id}")  # RQ ids: letters, digits, _ and -
        job = queue.enqueue(func, run_id, job_id=f"check-{job_key}-{int(now * 1000)}",
                            job_timeout=CHECK_TIMEOUT_S, result_ttl=600, failure_ttl=24 * 3600, at_front=True,
                            description=f"{stage} check for run {run_id}", meta={"run_id": run_id, "check": stage})
        redis.hset(LAST_CHECK_KEY, item, job.id)
        fired.append(item)
    return fired


def _check_of(graph: Graph, stage: str) -> str | None:
    if stage in CHECKS:
        return CHECKS[stage]
    try:
        return graph.stage(stage).check
    except KeyError:
        return None


def _in_hand(redis: Redis, queue: Queue, item: str) -> bool:
    """Whether the last check fired for ``item`` is still waiting, or running in a live process."""
    last = redis.hget(LAST_CHECK_KEY, item)
    if last is None:
        return False
    try:
        status = Job.fetch(as_text(last), connection=redis, serializer=queue.serializer).get_status()
    except NoSuchJobError:
        return False
    if status == JobStatus.QUEUED:
        return True
    return status == JobStatus.STARTED and bool(redis.exists(CHECK_LOCK_KEY.format(member=item)))


@contextmanager
def check_lock(redis: Redis, stage: str, run_id: str, token: str, *,
               ttl_s: int = CHECK_LOCK_TTL_S) -> Iterator[bool]:
    """Hold the run's check lock for the block (yields False while another check of the run holds it).
    The lock is renewed while the block runs and left to expire if the process dies."""
    key = CHECK_LOCK_KEY.format(member=member(stage, run_id))
    if not redis.set(key, token, nx=True, ex=ttl_s):
        yield False
        return
    try:
        with repeating(f"check lock {key}", lambda: redis.eval(_RENEW_IF_OWNER, 1, key, token, ttl_s), ttl_s / 3):
            yield True
    finally:
        redis.eval(_UNLOCK_IF_OWNER, 1, key, token)


def enrol_live(redis: Redis) -> None:
    """Give each newly live release an always-on timer (its first check comes at once and only enrols it)
    and cancel the timers of services no longer live; every ``ENROL_EVERY_S`` at most, whatever the routers."""
    if not redis.set(ENROL_KEY, "1", nx=True, ex=ENROL_EVERY_S):
        return
    start, stop = always_on.enrolment(redis)
    for key in start:
        schedule(redis, ALWAYS_ON, key, after_s=0)
    for key in stop:
        cancel(redis, ALWAYS_ON, key)


def enrol_drift(redis: Redis, repos: Sequence[str], *, now: float | None = None) -> None:
    """A drift-check timer, due at once, for each of ``repos`` (served repositories whose configuration asks for
    drift checks) that has none yet."""
    due = time.time() if now is None else now
    for repo in repos:
        redis.zadd(TIMERS_KEY, {member(DRIFT_CHECK, repo): due}, nx=True)


def run_timed(redis: Redis, kind: str, key: str, token: str, look: Callable[[], float | None]) -> dict[str, object]:
    """One check of a timer that belongs to no stage, under its check lock: ``look`` returns when to look
    again (None: the timer goes). A look that raises is logged and looked at again later."""
    with check_lock(redis, kind, key, token, ttl_s=TIMED_LOCK_TTL_S) as mine:
        if not mine:
            return {"skipped": True, "reason": "another check of it is running"}
        try:
            later = look()
        except Exception:
            logger.exception("%s check of %s failed; looking again in %ss", kind, key, TIMED_RETRY_S)
            schedule(redis, kind, key, after_s=TIMED_RETRY_S)
            return {"error": True}
        if later is None:
            cancel(redis, kind, key)
        else:
            schedule(redis, kind, key, after_s=later)
        return {"later_s": later}
