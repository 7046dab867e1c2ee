"""What the router does with deploy locks: hand them on when a run ends, keep them while it lives.

A run holds its locks from admission (:mod:`jobs.dispatch`) to its end. When it ends, the router's
``_finish`` releases them and, in the same Lua step, gives each to the next queued run
(:meth:`orchestra.locks.Locks.hand_on`); that run starts and its thread is told. On every tick
(:func:`tend`) the router renews the locks of runs that live, gives locks whose owner died (the lock
expired) to the next in line, and starts admitted runs that nobody started (a crash between the
admission and the first enqueue). A run whose stage job runs in a worker that stopped beating is
not renewed: its lock expires instead of outliving its owner.

Cancelling a run that is moving traffic is cooperative (:func:`stops_itself`): the cancel flag makes
the deploy stop before its next traffic change and roll back; the run ends, and its locks go, only
when that stage job has ended.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import Redis
from rq.job import Job, JobStatus

from jobs.runner import is_beating
from orchestra import texts
from orchestra.errors import NotFound
from orchestra.events import EventBus, EventType
from orchestra.locks import Locks, cancel_requested
from orchestra.store import Run, RunStatus, RunStore

logger = logging.getLogger(__name__)

TRAFFIC_STAGES = ("deploy", "rollback")  # stages that move traffic: a cancel waits for them to roll back
UNSTARTED_S = 10.0  # an admitted run still not started after this was left by a crashed dispatcher

Start = Callable[[Run], None]
JobOf = Callable[[Run], "Job | None"]


def stops_itself(redis: Redis, run: Run, job_of: JobOf) -> bool:
    """Whether a cancelled ``run`` is moving traffic now, and so ends on its own once it has rolled back."""
    if run.status != RunStatus.RUNNING or run.stage not in TRAFFIC_STAGES or not cancel_requested(redis, run.id):
        return False
    job = job_of(run)
    return job is not None and job.get_status() == JobStatus.STARTED


def as_cancelled(redis: Redis, run_id: str, status: RunStatus, reason: str) -> tuple[RunStatus, str]:
    """A run that was asked to cancel and then failed (its deploy stopped and rolled back) ends cancelled."""
    by = cancel_requested(redis, run_id)
    if by is not None and status == RunStatus.FAILED:
        return RunStatus.CANCELLED, texts.CANCELLED_WITH.format(by=by, reason=reason)
    return status, reason


def release(redis: Redis, run: Run, *, start: Start) -> None:
    """``run`` ended: its locks go to the next queued runs (or, still queued itself, it leaves the queue)."""
    withdrawn = "queued_run_cancelled" if run.status == RunStatus.CANCELLED else "queued_run_ended"
    promoted = Locks(redis).hand_on(run, why=f"run {run.id} ended ({run.status.value})", withdrawn=withdrawn)
    start_all(redis, promoted, start, why=f"run {run.id} ended")


def start_all(redis: Redis, run_ids: list[str], start: Start, *, why: str) -> None:
    """Tell each run that got its locks, and start it."""
    store, bus = RunStore(redis), EventBus(redis)
    for run_id in run_ids:
        run = store.get(run_id)
        bus.emit(run.id, EventType.LOCK_GRANTED, "orchestra", fence=run.fence,
                 summary=texts.LOCK_GRANTED.format(services=", ".join(run.services), env=run.env, why=why))
        logger.info("run %s: got its locks (%s); starting", run.id, why)
        start(run)


def tend(redis: Redis, start: Start, job_of: JobOf) -> None:
    """Renew the locks of living runs, pass on locks whose owner is gone, start admitted runs left unstarted."""
    locks, store = Locks(redis), RunStore(redis)
    start_all(redis, locks.pass_on_expired(), start, why="the previous holder's lock expired")
    for service, env in locks.waiting():
        holder = locks.holder(service, env)
        ended = _ended(store, holder.run_id) if holder is not None else None
        if ended is not None:  # its end was recorded, its hand-on was not
            release(redis, ended, start=start)
    for run in store.active():
        if not run.fence:
            continue
        try:
            _keep(redis, run, start, job_of)
        except Exception:
            logger.exception("run %s: could not keep its locks", run.id)


def _keep(redis: Redis, run: Run, start: Start, job_of: JobOf) -> None:
    job = job_of(run)
    if job is not None and job.get_status() == JobStatus.STARTED and not is_beating(redis, run.id):
        return  # its worker stopped: the lock is left to expire, or the reaper ends the run first
    if Locks(redis).renew(run) == 0:
        return
    if run.status == RunStatus.QUEUED and run.attempt == 0 and time.time() - run.updated_at > UNSTARTED_S:
        logger.warning("run %s: admitted but never started; starting it now", run.id)
        start(run)


def _ended(store: RunStore, run_id: str) -> Run | None:
    """The run, if it has ended (a holder whose record is gone is left to its lock's expiry)."""
    try:
        run = store.get(run_id)
    except NotFound:
        return None
    return run if run.status.finished else None
