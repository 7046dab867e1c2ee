"""Run records, the audit trail, idempotency keys and the count of refused events, in Redis."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from redis import Redis, WatchError
from redis.client import Pipeline

from orchestra.errors import NotFound
from orchestra.events import as_fields, as_text
from orchestra.ids import new_run_id

RUN_KEY = "orchestra:run:{run_id}"
RUNS_INDEX = "orchestra:runs"
ACTIVE_RUNS = "orchestra:runs:active"
AUDIT_STREAM = "orchestra:audit"
ONCE_KEY = "orchestra:once:{key}"
ONCE_TTL_S = 3 * 24 * 3600
ONCE_LEASE_S = 120  # longer than any hand-off takes; a crashed one's retry waits this long
REJECTED_EVENTS = "orchestra:events:rejected"  # hash: event type -> events the router refused to act on

class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.CANCELLED)


class Run(BaseModel):
    """One pass through the pipeline, from request to finish."""

    id: str = Field(default_factory=new_run_id)
    kind: str = "deploy"  # deploy | rollback | validate
    source: str = "cli"  # cli | slack | github
    requested_by: str
    repo: str
    services: list[str] = Field(default_factory=list)
    env: str = "staging"
    ref: str | None = None
    commit: str | None = None
    strategy: str | None = None
    status: RunStatus = RunStatus.QUEUED
    stage: str | None = None
    job_id: str | None = None  # the job that owns the current stage: only its result counts
    attempt: int = 0  # how many stage jobs the router has enqueued for this run (part of each job id)
    reason: str | None = None
    risk: str | None = None
    # What the risk policy decided once the change was classified (agents/analysis/route.py): the strategy
    # goes into ``strategy``; the requester's own ask is kept apart, as the decision's input.
    requested_strategy: str | None = None
    canary_steps: list[int] | None = None
    watch_s: float | None = None
    risk_approval: str | None = None  # why the risk policy asks for an approval before deploy; None: it does not
    nothing_to_do: str | None = None  # why the run ends after the analyze stage (a docs-only change)
    migrations: list[str] | None = None  # services whose change holds schema migrations (analyze); None: not looked
    # The iac stage's saved plan (agents/iac/apply.py: where it is, its sha256, the summary approvers see); the
    # iac_apply stage applies exactly that file. Outputs: the applied Terraform's non-sensitive outputs.
    iac_plan: dict[str, Any] | None = None
    iac_outputs: dict[str, Any] | None = None
    origin: dict[str, Any] = Field(default_factory=dict)
    channel: str | None = None  # where its Slack thread goes; "" for nowhere, None for the default channel
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    # service -> the fencing token of its deploy lock (orchestra/locks.py); empty while queued. Keep it the
    # last field: the lock scripts rewrite the record's JSON from here to its end.
    fence: dict[str, int] = Field(default_factory=dict)


class RunStore:
    """Run records: one JSON document per run, an index by time, the set of active runs."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def create(self, run: Run) -> Run:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(RUN_KEY.format(run_id=run.id), run.model_dump_json())
        pipe.zadd(RUNS_INDEX, {run.id: run.created_at})
        pipe.sadd(ACTIVE_RUNS, run.id)
        pipe.execute()
        return run

    def get(self, run_id: str) -> Run:
        raw = self.redis.get(RUN_KEY.format(run_id=run_id))
        if raw is None:
            raise NotFound(f"no run {run_id!r}", hint="`orchestra events` lists recent runs")
        return Run.model_validate_json(raw)

    def update(self, run_id: str, *, expect: Callable[[Run], bool] | None = None,
               also: Callable[[Pipeline, Run], None] | None = None, **changes: Any) -> Run | None:
        """Change fields atomically; return None (and change nothing) when ``expect`` says no. ``also``
        adds what records the change (its event, its audit entry) to the same transaction."""
        key = RUN_KEY.format(run_id=run_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current = self.get(run_id)
                    if expect is not None and not expect(current):
                        return None
                    updated = current.model_copy(update={**changes, "updated_at": time.time()})
                    if updated.status.finished and current.finished_at is None:
                        updated = updated.model_copy(update={"finished_at": time.time()})
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json())
                    if updated.status.finished:
                        pipe.srem(ACTIVE_RUNS, run_id)
                    if also is not None:
                        also(pipe, updated)
                    pipe.execute()
                    return updated
                except WatchError:
                    continue

    def active(self) -> list[Run]:
        return [self.get(as_text(i)) for i in self.redis.smembers(ACTIVE_RUNS)]

    def recent(self, count: int = 20) -> list[Run]:
        """The newest runs, newest first."""
        ids = self.redis.zrevrange(RUNS_INDEX, 0, count - 1)
        return [self.get(as_text(i)) for i in ids]


class Audit:
    """Append-only record of every action: who asked, who approved, what ran, what came out."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def record(self, action: str, *, actor: str, run_id: str | None = None, **detail: Any) -> str:
        return as_text(self.redis.xadd(AUDIT_STREAM, audit_entry(action, actor=actor, run_id=run_id, **detail)))

    def entries(self, count: int = 100) -> list[dict[str, Any]]:
        """The newest audit entries, oldest first."""
        rows = []
        newest: Any = self.redis.xrevrange(AUDIT_STREAM, count=count)
        for entry_id, fields in reversed(newest):
            row = as_fields(fields)
            rows.append({**row, "id": as_text(entry_id), "detail": json.loads(row["detail"])})
        return rows


def audit_entry(action: str, *, actor: str, run_id: str | None = None, **detail: Any) -> dict[Any, Any]:
    """The fields of one audit entry, for an XADD to ``AUDIT_STREAM`` inside a caller's transaction."""
    return {"action": action, "actor": actor, "run_id": run_id or "", "ts": str(time.time()),
            "detail": json.dumps(detail, default=str)}


def claim_once(redis: Redis, key: str, *, ttl_s: int = ONCE_TTL_S) -> bool:
    """True the first time ``key`` is seen within ``ttl_s`` (Slack retries, GitHub redeliveries)."""
    return bool(redis.set(ONCE_KEY.format(key=key), "1", nx=True, ex=ttl_s))


def begin_once(redis: Redis, key: str, *, lease_s: int = ONCE_LEASE_S, token: str = "") -> str:
    """``new`` the first time ``key`` is seen, ``pending`` while that first one is being handled, ``done``
    after :func:`finish_once`. A first one whose process died without finishing holds ``key`` only
    for ``lease_s``: a retry after that is ``new`` again, so nothing is lost between seeing a request
    and acting on it. ``token`` names this claim for :func:`release_once`."""
    return as_text(redis.eval(_BEGIN_ONCE, 1, ONCE_KEY.format(key=key), lease_s, f"pending:{token}"))


def release_once(redis: Redis, key: str, token: str) -> None:
    """Give up the claim ``token`` made (if it is still pending): a caller that timed out waiting for
    :func:`begin_once` cannot know whether the claim landed, and must not leave it in the way."""
    redis.eval(_RELEASE_ONCE, 1, ONCE_KEY.format(key=key), f"pending:{token}")


def finish_once(redis: Redis | Pipeline, key: str, *, ttl_s: int = ONCE_TTL_S) -> None:
    """Mark ``key`` handled; call it in the transaction that records what handling it did."""
    redis.set(ONCE_KEY.format(key=key), "1", ex=ttl_s)


_BEGIN_ONCE = """
local seen = redis.call('GET', KEYS[1])
if seen and string.sub(seen, 1, 8) == 'pending:' then return 'pending' end
if seen then return 'done' end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
return 'new'
"""
_RELEASE_ONCE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""




def count_rejected(redis: Redis, event_type: str) -> None:
    """One more event of ``event_type`` that was refused (a forgery, or a result from a job that lost its stage)."""
    redis.hincrby(REJECTED_EVENTS, event_type, 1)


def rejected_counts(redis: Redis) -> dict[str, int]:
    """How many events of each type were refused, since the start (``orchestra_events_rejected`` on /metrics)."""
    raw: Any = redis.hgetall(REJECTED_EVENTS)
    return {as_text(k): int(v) for k, v in raw.items()}
