"""Deploy locks: one run at a time per service and environment, a queue behind the holder, fencing tokens.

A run takes its locks when it is admitted (:meth:`Locks.admit`, one Lua step that also records the run
and its audit entry) or waits in each lock's queue, oldest first; a request that says ``no_wait`` is
refused instead. Each grant draws a fencing token from the lock's counter (``INCR``, never reset) and
the token is stored on the run (``Run.fence``): whoever moves traffic first checks that the lock still
carries its token (:class:`Fence`). Only the owner (run id and token) releases a lock, and releasing
hands it to the next queued run in the same step (:meth:`Locks.hand_on`). A lock is renewed while its
run lives (:meth:`Locks.renew`); one whose owner died expires and is passed on (:meth:`Locks.pass_on_expired`).

The scripts reach keys they compute (the queued run's other locks), so they need one Redis, not a Cluster.
"""
from __future__ import annotations

import json
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis import Redis

from orchestra import texts
from orchestra.errors import LockHeld, StageFailed
from orchestra.events import as_text
from orchestra.lock_scripts import (
    ACQUIRE,
    ADMIT,
    HAND_ON,
    LOCK_KEY,
    PASS_ON_EXPIRED,
    QUEUE_KEY,
    RENEW,
    WAITING,
)
from orchestra.store import AUDIT_STREAM, Run, RunStore, audit_entry

CANCEL_KEY = "orchestra:cancel:{run_id}"  # who asked to cancel a running run
CANCEL_TTL_S = 24 * 3600


class Lock(BaseModel):
    service: str
    env: str
    owner: str
    run_id: str
    acquired_at: float
    expires_at: float
    token: int = 0
    ttl_s: float = 0


@dataclass(frozen=True)
class Admission:
    """What :meth:`Locks.admit` decided: ``admitted`` (``fence`` holds the tokens), ``queued`` (behind
    ``holder`` or ``ahead``, at ``position``) or ``refused`` (nothing was recorded)."""

    outcome: str
    fence: dict[str, int]
    holder: Lock | None = None
    ahead: str | None = None  # the run first in line when the lock is between owners
    position: int = 0


class Locks:
    """One deploy at a time per service and environment: admission, queue, hand-off, renewal."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def admit(self, run: Run, *, ttl_s: float, no_wait: bool = False,
              detail: dict[str, Any] | None = None) -> Admission:
        """Record ``run`` holding the locks of its services in its environment, or queued behind whoever
        holds one (``no_wait``: refused, nothing recorded), with its audit entry, in one step."""
        locks = [[service, run.env] for service in run.services]
        raw = self.redis.eval(ADMIT, 0, run.id, run.model_copy(update={"fence": {}}).model_dump_json(),
                              run.created_at, run.requested_by, time.time(), _ms(ttl_s), "1" if no_wait else "0",
                              json.dumps(detail or {}, default=str), json.dumps(locks))
        out = json.loads(as_text(raw))
        holder = Lock.model_validate_json(out["holder"]) if out.get("holder") else None
        return Admission(out["outcome"], _tokens(out.get("fence")), holder, out.get("ahead") or None,
                         int(out.get("position") or 0))

    def hand_on(self, run: Run, *, why: str, withdrawn: str = "") -> list[str]:
        """Release what ``run`` owns (its tokens; any token when it has none on record), take it out of
        every queue, and give each freed lock to the next queued run; the ids of the runs that got theirs.
        ``withdrawn``, when ``run`` was still queued, is the audit action recorded for that."""
        locks = [[service, run.env, run.fence.get(service, -1)] for service in run.services]
        raw = self.redis.eval(HAND_ON, 0, run.id, json.dumps(locks), time.time(), why, withdrawn)
        return list(json.loads(as_text(raw))["promoted"] or [])

    def pass_on_expired(self) -> list[str]:
        """Give every lock whose holder let it expire (a dead owner) to its next queued run."""
        return list(json.loads(as_text(self.redis.eval(PASS_ON_EXPIRED, 0, time.time()))) or [])

    def renew(self, run: Run) -> int:
        """Push back the expiry of every lock ``run`` owns (by run id and token); how many it still owns."""
        locks = [[service, run.env, token] for service, token in run.fence.items()]
        if not locks:
            return 0
        return int(self.redis.eval(RENEW, 0, json.dumps(locks), time.time(), run.id))

    def waiting(self) -> list[tuple[str, str]]:
        """The locks (service, environment) that runs are queued for."""
        return [tuple(json.loads(as_text(m))) for m in self.redis.smembers(WAITING)]  # type: ignore[misc]

    def queue(self, service: str, env: str) -> list[str]:
        """The runs waiting for the lock, first in line first."""
        return [as_text(r) for r in self.redis.lrange(QUEUE_KEY.format(service=service, env=env), 0, -1)]

    def acquire(self, service: str, env: str, *, owner: str, run_id: str, ttl_s: float = 1800) -> Lock:
        """The lock for ``run_id``: the one it holds, else a fresh one when nobody holds it and nobody
        waits before it; else :class:`LockHeld` naming who has it (or who is next)."""
        out = json.loads(as_text(self.redis.eval(ACQUIRE, 0, service, env, run_id, owner, time.time(), _ms(ttl_s))))
        if "taken" in out:
            return Lock.model_validate_json(out["taken"])
        if "held" in out:
            holder = Lock.model_validate_json(out["held"])
            if holder.run_id == run_id:
                return holder
            raise LockHeld(holder.owner, holder.run_id, service, env, holder.expires_at)
        raise LockHeld("the next queued run", out["ahead"], service, env, time.time())

    def holder(self, service: str, env: str) -> Lock | None:
        raw = self.redis.get(LOCK_KEY.format(service=service, env=env))
        return Lock.model_validate_json(raw) if raw else None

    def release(self, service: str, env: str, *, run_id: str) -> bool:
        """Release only if ``run_id`` holds the lock, and pass it on to the next queued run."""
        holder = self.holder(service, env)
        if holder is None or holder.run_id != run_id:
            return False
        raw = self.redis.eval(HAND_ON, 0, run_id, json.dumps([[service, env, holder.token]]), time.time(),
                              f"{run_id} released it", "")
        return bool(json.loads(as_text(raw))["released"])


def renew_locks(redis: Redis, run_id: str) -> int:
    """Renew the deploy locks ``run_id`` owns (its stage heartbeat calls this); how many it still owns."""
    return Locks(redis).renew(RunStore(redis).get(run_id))


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _tokens(raw: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def request_cancel(redis: Redis, run_id: str, by: str, **detail: Any) -> None:
    """Ask a run to stop before it moves traffic again (a deploy rolls back, then the run ends), with
    its audit entry, in one transaction."""
    pipe = redis.pipeline(transaction=True)
    pipe.set(CANCEL_KEY.format(run_id=run_id), by, ex=CANCEL_TTL_S)
    pipe.xadd(AUDIT_STREAM, audit_entry("run_cancel_requested", actor=by, run_id=run_id, **detail))
    pipe.execute()


def cancel_requested(redis: Redis, run_id: str) -> str | None:
    """Who asked to cancel ``run_id``, if anyone did."""
    raw = redis.get(CANCEL_KEY.format(run_id=run_id))
    return as_text(raw) if raw is not None else None


@dataclass(frozen=True)
class Fence:
    """What a run that holds its locks checks before it moves traffic: still the owner (its token is the
    lock's token), and not asked to cancel."""

    redis: Redis
    run_id: str
    env: str
    tokens: dict[str, int]

    def check(self, service: str) -> None:
        """Raise :class:`StageFailed` unless the run may move ``service``'s traffic now."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(CANCEL_KEY.format(run_id=self.run_id))
        pipe.get(LOCK_KEY.format(service=service, env=self.env))
        cancelled, raw = pipe.execute()
        if cancelled is not None:
            raise StageFailed(texts.CANCELLED_BEFORE_SHIFT.format(by=as_text(cancelled), service=service),
                              hint=texts.CANCELLED_HINT)
        holder = Lock.model_validate_json(raw) if raw else None
        token = self.tokens.get(service)
        if holder is None or holder.run_id != self.run_id or holder.token != token:
            now = f"run {holder.run_id} (token {holder.token})" if holder else "nobody"
            raise StageFailed(texts.FENCED.format(run_id=self.run_id, token=token, service=service, env=self.env,
                                                  holder=now), hint=texts.FENCED_HINT)


FENCE: ContextVar[Fence | None] = ContextVar("orchestra_fence", default=None)


def current_fence() -> Fence | None:
    """The fence of the deploy running in this context (set by the deploy agent while it holds its locks)."""
    return FENCE.get()
