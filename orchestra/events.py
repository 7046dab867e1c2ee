"""The event bus: typed events on Redis Streams.

Every event goes to the global stream (consumed by groups such as the router
and the relay) and to its run's own stream (replay of one run, in order).
Delivery is at least once: consumers ack after handling, entries left pending
by a crashed consumer are re-claimed with XAUTOCLAIM, and an entry that keeps
failing moves to the dead-letter stream.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ResponseError

from orchestra.redaction import redact_data

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EVENTS_STREAM = "orchestra:events"
DEAD_LETTER_STREAM = "orchestra:events:dead"
RUN_STREAM = "orchestra:run:{run_id}:events"
STREAM_MAXLEN = 100_000
# Both streams get the entry in one step and under the same id (two XADD * in a row could straddle
# a millisecond); the run's stream falls back to a fresh id only if its last one is already higher.
_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
if not pcall(redis.call, 'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'event', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
end
return id
"""


class EventType(StrEnum):
    RUN_REQUESTED = "run_requested"
    CODE_PUSH = "code_push"
    STAGE_STARTED = "stage_started"
    PROGRESS = "progress"
    STAGE_FAILED = "stage_failed"
    RISK_CLASSIFIED = "risk_classified"
    ROUTE_DECIDED = "route_decided"  # the path the risk policy chose, with its inputs and why
    CODE_ANALYSIS_RESULT = "code_analysis_result"
    TEST_RESULTS = "test_results"
    BUILD_READY = "build_ready"
    IAC_READY = "iac_ready"
    DRIFT_CHECKED = "drift_checked"  # the drift stage's result: what changed outside Terraform, or no drift
    MIGRATIONS_FOUND = "migrations_found"  # the change's schema migrations per service, destructive ones called out
    MIGRATIONS_APPLIED = "migrations_applied"  # the migrate stage's result
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_REJECTED = "approval_rejected"
    APPROVAL_EXPIRED = "approval_expired"
    DEPLOYMENT_TRIGGERED = "deployment_triggered"
    DEPLOYMENT_PROGRESS = "deployment_progress"
    DEPLOYMENT_SUCCEEDED = "deployment_succeeded"
    DEPLOYMENT_FAILED = "deployment_failed"
    OBSERVATION_PASSED = "observation_passed"
    OBSERVABILITY_ALERT = "observability_alert"
    ROLLBACK_EVENT = "rollback_event"
    LOCK_WAITING = "lock_waiting"
    LOCK_GRANTED = "lock_granted"  # a queued run got its deploy locks and starts
    POLICY_DENIED = "policy_denied"
    LLM_CALL = "llm_call"
    RUN_CANCELLED = "run_cancelled"
    RUN_FINISHED = "run_finished"


class Event(BaseModel):
    """One thing that happened in a run."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    type: EventType
    actor: str
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(default_factory=time.time)
    v: int = SCHEMA_VERSION
    id: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude={"id"})

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Event:
        return cls.model_validate({**json.loads(fields["event"]), "id": entry_id})


@dataclass(frozen=True)
class Delivery:
    """An event handed to a consumer, with how often it has been handed out."""

    entry_id: str
    event: Event
    deliveries: int = 1


class EventBus:
    """Publish events and read them back; the Redis connection is passed in."""

    def __init__(self, redis: Redis, *, stream: str = EVENTS_STREAM) -> None:
        self.redis = redis
        self.stream = stream

    def publish(self, event: Event) -> str:
        """Append ``event`` to the global stream and to its run's stream, atomically and under one id.

        Its data is redacted of secrets first: the stream is read by relays, explanations and people.
        """
        return as_text(self._publish(self.redis, event))

    def publish_in(self, pipe: Pipeline, event: Event) -> None:
        """Queue the publication of ``event`` in the caller's transaction, with the change it reports."""
        self._publish(pipe, event)

    def _publish(self, conn: Redis | Pipeline, event: Event) -> Any:
        clean = event.model_copy(update={"data": redact_data(event.data)})
        return conn.eval(_PUBLISH, 2, self.stream, RUN_STREAM.format(run_id=event.run_id),
                         clean.to_json(), STREAM_MAXLEN)

    def emit(self, run_id: str, type: EventType, actor: str, **data: Any) -> Event:
        """Build, publish and return an event (as it was stored: redacted)."""
        event = Event(run_id=run_id, type=type, actor=actor, data=redact_data(data))
        return event.model_copy(update={"id": self.publish(event)})

    def replay(self, run_id: str) -> list[Event]:
        """All events of one run, oldest first."""
        entries: Any = self.redis.xrange(RUN_STREAM.format(run_id=run_id))
        return [Event.from_entry(as_text(i), as_fields(f)) for i, f in entries]

    def tail(self, *, after: str = "$", block_ms: int = 1000,
             stop: threading.Event | None = None) -> Iterator[Event]:
        """Follow the global stream from ``after`` until ``stop`` is set."""
        last = after
        while stop is None or not stop.is_set():
            result: Any = self.redis.xread({self.stream: last}, block=block_ms, count=100)
            for _, entries in result or []:
                for entry_id, fields in entries:
                    last = as_text(entry_id)
                    yield Event.from_entry(last, as_fields(fields))

    def recent(self, count: int = 1000) -> list[Event]:
        """The newest ``count`` events of the global stream, oldest first."""
        entries: Any = self.redis.xrevrange(self.stream, count=count)
        return [Event.from_entry(as_text(i), as_fields(f)) for i, f in reversed(entries)]

    def ensure_group(self, group: str) -> None:
        """Create a consumer group that sees every event published from now on."""
        try:
            self.redis.xgroup_create(self.stream, group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class Consumer:
    """One member of a consumer group.

    ``read`` hands out, in this order: entries other members left pending for
    longer than ``claim_idle_ms`` (XAUTOCLAIM), then new entries. An entry
    handed out more than ``max_deliveries`` times goes to the dead-letter stream.
    """

    def __init__(self, bus: EventBus, group: str, name: str, *,
                 claim_idle_ms: int = 30_000, max_deliveries: int = 5) -> None:
        self.bus = bus
        self.redis = bus.redis
        self.group = group
        self.name = name
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        bus.ensure_group(group)

    def read(self, *, count: int = 50, block_ms: int = 1000) -> list[Delivery]:
        """The next batch of deliveries for this consumer (may be empty)."""
        claimed = self.claim_stale(count=count)
        if claimed:
            return claimed
        result: Any = self.redis.xreadgroup(self.group, self.name, {self.bus.stream: ">"},
                                       count=count, block=block_ms)
        return [d for _, entries in result or [] for i, f in entries if f
                if (d := self._parsed(as_text(i), as_fields(f))) is not None]

    def claim_stale(self, *, count: int = 50) -> list[Delivery]:
        """Take over entries idle for too long; dead-letter the ones that keep failing."""
        claimed: Any = self.redis.xautoclaim(self.bus.stream, self.group, self.name,
                                              min_idle_time=self.claim_idle_ms, start_id="0-0",
                                              count=count)
        entries = claimed[1]
        if not entries:
            return []
        counts = self._delivery_counts([as_text(i) for i, _ in entries])
        out = []
        for entry_id, fields in entries:
            entry_id = as_text(entry_id)
            if not fields:  # trimmed from the stream meanwhile: nothing left to deliver
                self.redis.xack(self.bus.stream, self.group, entry_id)
                continue
            delivery = self._parsed(entry_id, as_fields(fields), counts.get(entry_id, 1))
            if delivery is None:
                continue
            if delivery.deliveries > self.max_deliveries:
                self.dead_letter(delivery, reason=f"delivered {delivery.deliveries} times")
            else:
                out.append(delivery)
        return out

    def _parsed(self, entry_id: str, fields: dict[str, str], deliveries: int = 1) -> Delivery | None:
        """The entry as a delivery; an entry that is not an event goes to the dead-letter stream."""
        try:
            return Delivery(entry_id, Event.from_entry(entry_id, fields), deliveries)
        except (KeyError, ValueError, TypeError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
            logger.warning("entry %s is not an event (%s): dead-lettered by %s", entry_id, exc, self.group)
            pipe = self.redis.pipeline(transaction=True)
            pipe.xadd(DEAD_LETTER_STREAM, {"entry": json.dumps(fields)[:10_000], "entry_id": entry_id,
                                           "group": self.group, "reason": f"not an event: {exc}"[:500]})
            pipe.xack(self.bus.stream, self.group, entry_id)
            pipe.execute()
            return None

    def ack(self, delivery: Delivery) -> None:
        self.redis.xack(self.bus.stream, self.group, delivery.entry_id)

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        """Move an entry to the dead-letter stream and ack it here."""
        logger.warning("run %s: event %s %s dead-lettered by %s: %s", delivery.event.run_id,
                       delivery.entry_id, delivery.event.type, self.group, reason)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(DEAD_LETTER_STREAM, {"event": delivery.event.to_json(), "entry_id": delivery.entry_id,
                                       "group": self.group, "reason": reason})
        pipe.xack(self.bus.stream, self.group, delivery.entry_id)
        pipe.execute()

    def run(self, handler: Callable[[Event], None], *, stop: threading.Event,
            block_ms: int = 500) -> None:
        """Hand every delivery to ``handler`` and ack it, until ``stop`` is set.

        A handler that raises leaves the entry pending: it is re-claimed after
        ``claim_idle_ms`` and dead-lettered after ``max_deliveries``.
        """
        while not stop.is_set():
            for delivery in self.read(block_ms=block_ms):
                try:
                    handler(delivery.event)
                except Exception:
                    logger.exception("run %s: %s failed to handle %s", delivery.event.run_id,
                                     self.group, delivery.event.type)
                    continue
                self.ack(delivery)

    def _delivery_counts(self, entry_ids: list[str]) -> dict[str, int]:
        pending = self.redis.xpending_range(self.bus.stream, self.group, min=entry_ids[0],
                                            max=entry_ids[-1], count=len(entry_ids) * 2)
        return {as_text(p["message_id"]): int(p["times_delivered"]) for p in pending}


def dead_letters(redis: Redis, count: int = 100) -> list[dict[str, str]]:
    """The newest dead-lettered entries (for `orchestra events --dead`)."""
    entries: Any = redis.xrevrange(DEAD_LETTER_STREAM, count=count)
    return [as_fields(f) for _, f in entries]


def as_text(value: Any) -> str:
    """A Redis reply value as text (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def as_fields(fields: Any) -> dict[str, str]:
    """A stream entry's fields as text."""
    return {as_text(k): as_text(v) for k, v in (fields or {}).items()}
