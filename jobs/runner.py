"""Running one stage of a run inside an RQ job, and reporting how it ended.

Every stage ends in exactly one of: its result event (the gate passed or
not), or a ``stage_failed`` event (an exception, a timeout, a dead worker).
Both name the job that ran the stage: the router accepts them only from the
job it recorded on the run, and a job that does not own its stage runs nothing.
While a stage runs it keeps a heartbeat key alive; the router's reaper
turns a stage whose heartbeat stopped into a ``stage_failed`` event.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from redis import Redis
from rq import get_current_job

from agents.context import AgentContext, StageResult
from jobs import forks, timers, workspace
from jobs.graph import Stage
from orchestra import policy
from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.locks import renew_locks
from orchestra.logs import run_context
from orchestra.loops import repeating
from orchestra.settings import Settings
from orchestra.store import Audit, Run, RunStatus, RunStore, claim_once

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "orchestra:hb:{run_id}"
POLICY_DIFFERS = ("This branch's devops_orchestra.yaml sets its own policy ({differences}); it does not apply: "
                  "the trusted policy from {source} does. Change the policy there.")
HEARTBEAT_TTL_S = 10  # a loaded machine may stall a worker for seconds: that is not death
CHECK_FAILURES_KEY = "orchestra:check-failures:{run_id}:{stage}"
CHECK_ATTEMPTS = 3  # checks in a row that raise before the stage fails
CHECK_RETRY_S = 5.0
_settings: Settings | None = None

Agent = Callable[[AgentContext], StageResult]


def configure(settings: Settings) -> None:
    """Give stage jobs in this process (and the work horses it forks) their settings."""
    global _settings
    _settings = settings


def current_settings() -> Settings:
    if _settings is None:
        raise RuntimeError("jobs.runner.configure(settings) was not called in this worker process")
    return _settings


def execute_stage(run_id: str, stage: Stage, agent: Agent, *, redis: Redis | None = None,
                  settings: Settings | None = None) -> dict[str, Any]:
    """Run ``agent`` for one stage of ``run_id`` and publish the stage's result event."""
    job = get_current_job()
    redis = redis if redis is not None else job.connection  # type: ignore[union-attr]
    settings = settings or current_settings()
    store, bus = RunStore(redis), EventBus(redis)
    with run_context(run_id, stage.name):  # every line logged while the stage runs names the run and stage
        run = store.get(run_id)
        if run.status.finished:
            logger.info("run %s: %s skipped, the run already ended as %s", run_id, stage.name, run.status)
            return {"skipped": True}
        owner = job.id if job else run.job_id  # called in-process (tests, tools): the run's own job
        if job is not None and (job.id != run.job_id or run.stage != stage.name):
            logger.warning("run %s: job %s does not own %s (the run's job is %s at %s); nothing ran", run_id,
                           job.id, stage.name, run.job_id, run.stage)
            return {"skipped": True, "reason": "not the job that owns the stage"}
        if not forks.allowed(redis, run, stage.name):  # the router parks these; a stray job still runs nothing
            logger.warning("run %s: %s of a fork's pull request is not allowed to run its code; nothing ran",
                           run_id, stage.name)
            return {"skipped": True, "reason": "a fork's code runs after `/orchestra validate`"}
        run = store.update(run_id, stage=stage.name, status=RunStatus.RUNNING, job_id=owner) or run
        bus.emit(run_id, EventType.STAGE_STARTED, stage.name, stage=stage.name)
        with heartbeat(redis, run_id):
            result = _conclude(run_id, stage, agent, redis, settings, bus)
        if result.later_s is not None:  # goes on in scheduled checks; this worker is free again
            timers.schedule(redis, stage.name, run_id, after_s=result.later_s)
            return {"later_s": result.later_s, "summary": result.summary}
        _publish(bus, run_id, stage, result, owner)
        return {"passed": result.passed, "summary": result.summary}


def execute_check(run_id: str, stage: Stage, agent: Agent, *, redis: Redis | None = None,
                  settings: Settings | None = None) -> dict[str, Any]:
    """One scheduled check of a stage that goes on without a worker (see :mod:`jobs.timers`): ``agent``
    looks once; the stage's result is published for the job that began the stage when it concludes, else
    the next check is scheduled. An exception is retried a few times, then fails the stage."""
    job = get_current_job()
    redis = redis if redis is not None else job.connection  # type: ignore[union-attr]
    settings = settings or current_settings()
    token = job.id if job else f"inline-{time.time()}"
    with run_context(run_id, stage.name), timers.check_lock(redis, stage.name, run_id, token) as mine:
        if not mine:
            return {"skipped": True, "reason": "another check of this run is running"}
        run = RunStore(redis).get(run_id)
        if run.status != RunStatus.RUNNING or run.stage != stage.name:
            timers.cancel(redis, stage.name, run_id)
            return {"skipped": True, "reason": f"the run is {run.status.value} at {run.stage}"}
        result = _checked(run, stage, agent, redis, settings)
        if result is None:
            return {"error": True}
        if result.later_s is not None:
            timers.schedule(redis, stage.name, run_id, after_s=result.later_s)
            return {"later_s": result.later_s}
        timers.cancel(redis, stage.name, run_id)
        _publish(EventBus(redis), run_id, stage, result, run.job_id)
        return {"passed": result.passed, "summary": result.summary}


def _checked(run: Run, stage: Stage, agent: Agent, redis: Redis, settings: Settings) -> StageResult | None:
    """The check's result; None after an exception that is retried (the next check is scheduled)."""
    failures = CHECK_FAILURES_KEY.format(run_id=run.id, stage=stage.name)
    try:
        result = _conclude(run.id, stage, agent, redis, settings, EventBus(redis))
    except Exception as exc:
        count = int(redis.incr(failures))
        redis.expire(failures, 24 * 3600)
        logger.exception("run %s: check of %s failed (%s of %s)", run.id, stage.name, count, CHECK_ATTEMPTS)
        if count < CHECK_ATTEMPTS:
            timers.schedule(redis, stage.name, run.id, after_s=CHECK_RETRY_S)
            return None
        timers.cancel(redis, stage.name, run.id)
        fail_stage(redis, run.id, stage.name, key=f"check-{run.id}-{stage.name}", job_id=run.job_id,
                   reason=f"{stage.name} failed {count} checks in a row, the last with {type(exc).__name__}: {exc}")
        return None
    redis.delete(failures)
    return result


def _publish(bus: EventBus, run_id: str, stage: Stage, result: StageResult, owner: str | None) -> None:
    """The stage's result event, naming the job that owns the stage (the router checks it)."""
    bus.emit(run_id, stage.outcome(result.passed), stage.name,
             **{**result.data, "stage": stage.name, "passed": result.passed, "summary": result.summary,
                "job_id": owner})


def _conclude(run_id: str, stage: Stage, agent: Agent, redis: Redis, settings: Settings,
              bus: EventBus) -> StageResult:
    """The agent's result; an expected error becomes a failed result with its reason."""
    run = RunStore(redis).get(run_id)
    try:
        src, config = workspace.prepare(run, settings, redis=redis)
        config = _governed(run, config, settings, redis, bus)
        ctx = AgentContext(run=RunStore(redis).get(run_id), settings=settings, redis=redis, bus=bus,
                           workspace=src, config=config, actor=stage.name)
        return agent(ctx)
    except OrchestraError as exc:
        logger.info("run %s: %s stopped: %s", run_id, stage.name, exc)
        return StageResult(False, exc.message, {"hint": exc.hint} if exc.hint else {})


def _governed(run: Run, config: ProjectConfig, settings: Settings, redis: Redis, bus: EventBus) -> ProjectConfig:
    """The checkout's configuration under the trusted policy; the thread hears once when the branch tried
    to set a gate of its own."""
    trusted = policy.trusted_policy(run.repo, settings)
    differences = trusted.differences(config)
    if differences and claim_once(redis, f"policy-differs:{run.id}"):
        summary = POLICY_DIFFERS.format(differences="; ".join(differences[:5]), source=trusted.source)
        logger.warning("run %s: %s", run.id, summary)
        bus.emit(run.id, EventType.POLICY_DENIED, "orchestra", summary=summary, reason=summary,
                 differences=differences, source=trusted.source)
        Audit(redis).record("branch_policy_ignored", actor=run.requested_by, run_id=run.id,
                            differences=differences, source=trusted.source)
    return trusted.govern(config)


def fail_stage(redis: Redis, run_id: str, stage: str, *, reason: str, key: str, job_id: str | None) -> bool:
    """Publish ``stage_failed`` for ``job_id`` once per ``key``, unless the run moved on; True if published."""
    run = RunStore(redis).get(run_id)
    if run.status.finished or run.stage != stage or run.job_id != job_id \
            or not claim_once(redis, f"stage-failed:{key}"):
        return False
    logger.warning("run %s: stage %s failed: %s", run_id, stage, reason)
    EventBus(redis).emit(run_id, EventType.STAGE_FAILED, "orchestra", stage=stage, reason=reason, job_id=job_id)
    return True


def on_stage_failure(job: Any, connection: Redis, exc_type: type, exc: BaseException,
                     tb: Any) -> None:
    """RQ failure callback: an exception, a timeout or an abandoned job."""
    run_id, stage = job.meta.get("run_id"), job.meta.get("stage")
    if not run_id or not stage:
        return
    if job.retries_left:
        EventBus(connection).emit(run_id, EventType.PROGRESS, stage,
                                  message=f"{stage} hit {exc_type.__name__}; retrying "
                                          f"({job.retries_left} left)")
        return
    reason = f"{stage} failed with {exc_type.__name__}: {exc}".strip().rstrip(":")
    if exc_type.__name__ == "JobTimeoutException":
        reason = f"{stage} did not finish within its {job.timeout}s time limit"
    fail_stage(connection, run_id, stage, reason=reason, key=job.id, job_id=job.id)


@contextmanager
def heartbeat(redis: Redis, run_id: str) -> Iterator[None]:
    """Keep the run's heartbeat key alive while the block runs.

    The key is left to expire rather than deleted, so the reaper does not
    mistake the moments RQ needs to record the job's end for a dead worker.
    """
    key = HEARTBEAT_KEY.format(run_id=run_id)

    def beat() -> None:
        redis.set(key, "1", ex=HEARTBEAT_TTL_S)
        renew_locks(redis, run_id)  # the run's deploy locks live as long as it beats

    with repeating(f"run {run_id}: heartbeat", beat, HEARTBEAT_TTL_S / 5):
        yield


def is_beating(redis: Redis, run_id: str) -> bool:
    return bool(redis.exists(HEARTBEAT_KEY.format(run_id=run_id)))
