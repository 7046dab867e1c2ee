"""Cancel an active run: by run id, or the one active run of a service.

A queued run leaves its locks' queues at once. A running one gets a cancel flag: a deploy moving traffic
checks it before each traffic change, stops and rolls back, and the run ends (and hands its locks on)
only then; a run in any other stage ends at once (see :mod:`jobs.handoff`).
"""
from __future__ import annotations

from redis import Redis

from handlers.reply import Reply, ReplyKind, Who
from orchestra import policy, texts
from orchestra.errors import NotFound, PolicyDenied
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent
from orchestra.locks import Locks, request_cancel
from orchestra.repos import resolve_service
from orchestra.settings import Settings
from orchestra.store import Audit, Run, RunStatus, RunStore


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings, run_id: str | None = None) -> Reply:
    """Ask the router to cancel the run; the requester or anyone who may deploy there may."""
    store = RunStore(redis)
    run = store.get(run_id) if run_id else _only_active(store, intent)
    if run.status.finished:
        raise NotFound(texts.CANCEL_ENDED.format(run_id=run.id, status=run.status.value))
    if intent.user != run.requested_by:
        _, config = resolve_service(run.services[0] if run.services else None, settings)
        try:
            policy.check_deploy(intent.user, run.env, config.environment(run.env), rollback=True)
        except PolicyDenied as exc:
            Audit(redis).record("cancel_denied", actor=intent.user, run_id=run.id, reason=str(exc),
                                source=intent.source)
            raise
    # The flag first: a deploy moving traffic sees it before its next change, rolls back, then ends.
    request_cancel(redis, run.id, intent.user, source=intent.source, status=run.status.value, stage=run.stage)
    if run.status == RunStatus.QUEUED and not run.fence:  # waiting for a lock: out of the queue now
        Locks(redis).hand_on(run, why=f"cancelled by {intent.user}", withdrawn="queued_run_cancelled")
    EventBus(redis).emit(run.id, EventType.RUN_CANCELLED, intent.user, reason=f"cancelled by {intent.user}")
    return Reply(ReplyKind.CANCELLED, run=run, data={"by": intent.user})


def _only_active(store: RunStore, intent: Intent) -> Run:
    named = set(intent.services or ([intent.service] if intent.service else []))
    active = sorted((r for r in store.active() if (not named or named & set(r.services))
                     and (intent.env is None or r.env == intent.env)), key=lambda r: r.created_at)
    what = f"for {intent.service} " if intent.service else ""
    if not active:
        raise NotFound(texts.CANCEL_NOTHING.format(what=what))
    if len(active) > 1:
        runs = ", ".join(f"`{r.id}` ({', '.join(r.services)} → {r.env})" for r in active)
        raise NotFound(texts.CANCEL_AMBIGUOUS.format(what=f" {what.strip()}" if what else "", runs=runs,
                                                     first=active[0].id))
    return active[0]
