"""The relay: events in, one Slack thread per run out.

A member of the ``relay`` consumer group. Each run gets one parent message,
updated in place (coalesced, at most once per ``update_interval_s``), and
thread replies for milestones and failures. Posts are paced per channel; a
429 holds the channel for its Retry-After; an event is acked only once what
it shows is in Slack, so a Slack error loses nothing (it stays pending and is
retried; a restarted relay re-claims it).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack import views
from bot.slack.pacer import Pacer
from bot.slack.threads import Thread, Threads
from handlers.rollback import safe_versions
from jobs.graph import PIPELINE
from orchestra.errors import NotFound
from orchestra.events import Consumer, Delivery, Event, EventBus, EventType
from orchestra.logs import run_context
from orchestra.loops import keep_going
from orchestra.redaction import hold_settings
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

logger = logging.getLogger(__name__)

LOUD_ALERTS = frozenset({"rollback_failed", "circuit_breaker_open", "rollback_pinned"})

RELAY_GROUP = "relay"
IGNORED = {EventType.LLM_CALL, EventType.PROGRESS, EventType.DEPLOYMENT_PROGRESS, EventType.STAGE_STARTED}
FIRST = {EventType.RUN_REQUESTED, EventType.CODE_PUSH}  # answered at once with what the run will do
DECISIONS = {EventType.APPROVAL_GRANTED, EventType.APPROVAL_REJECTED, EventType.APPROVAL_EXPIRED}
PERMANENT = {"channel_not_found", "not_in_channel", "is_archived", "invalid_blocks", "msg_too_long",
             "message_not_found", "cant_update_message"}
BACKOFF_S = (0.5, 1, 2, 5, 10, 30)


class Wait(Exception):
    """The channel cannot take a post right now; keep the event for later."""


@dataclass
class _Pending:
    delivery: Delivery
    failures: int = 0


@dataclass
class RelayStats:
    posts: int = 0
    updates: int = 0
    rate_limited: int = 0
    errors: int = 0


class Relay:
    """Render events into Slack threads; ``step`` is one pass, ``run`` loops until stopped."""

    def __init__(self, redis: Redis, settings: Settings, client: WebClient, *, name: str | None = None,
                 post_interval_s: float = 1.0, update_interval_s: float = 1.0,
                 claim_idle_ms: int = 30_000) -> None:
        self.redis = redis
        self.settings = settings
        hold_settings(settings)  # its tokens never reach a thread, whatever their shape
        self.client = client
        self.store = RunStore(redis)
        self.threads = Threads(redis)
        self.consumer = Consumer(EventBus(redis), RELAY_GROUP, name or f"{socket.gethostname()}-{os.getpid()}",
                                 claim_idle_ms=claim_idle_ms)
        self.pacer = Pacer(post_interval_s)
        self.update_interval_s = update_interval_s
        self.backlog: list[_Pending] = []
        self.dirty: dict[str, float] = {}  # run id -> when its parent may be updated next
        self.stats = RelayStats()
        self.shown: dict[str, str] = {}  # run id -> the parent's text as Slack has it

    def run(self, stop: threading.Event, *, block_ms: int = 200) -> None:
        """Relay until ``stop`` is set; Redis errors cost a pause (entries stay pending), never the loop."""
        def step() -> None:
            try:
                self.step(block_ms=block_ms)
            except ResponseError as exc:  # the stream or group was deleted under us: start over
                if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                    raise
                logger.warning("relay: %s; re-creating the consumer group", exc)
                self.consumer.bus.ensure_group(RELAY_GROUP)
        keep_going("slack-relay", step, stop)

    def step(self, *, block_ms: int = 200) -> None:
        held = {p.delivery.entry_id for p in self.backlog}
        for delivery in self.consumer.read(count=100, block_ms=self._idle_ms(block_ms)):
            if delivery.entry_id not in held:
                self.backlog.append(_Pending(delivery))
        self._drain()
        self._flush_updates()

    def _idle_ms(self, block_ms: int) -> int:
        """How long to wait for new events: until the next pending post or update is due."""
        now = time.monotonic()
        dues = [due - now for due in self.dirty.values()]
        dues += [self.pacer.wait_s(channel) for p in self.backlog
                 if (run := self._run(p.delivery.event)) is not None and (channel := self._channel(run))]
        soonest = min(dues, default=block_ms / 1000)
        return max(1, min(block_ms, int(soonest * 1000)))

    def _drain(self) -> None:
        blocked: set[str] = set()
        for pending in list(self.backlog):
            event = pending.delivery.event
            run = self._run(event)
            channel = self._channel(run) if run else None
            if channel in blocked:
                continue
            try:
                if run is not None and channel is not None:
                    with run_context(run.id):
                        self._show(pending.delivery, run, channel)
            except Wait:
                blocked.add(channel or "")
                continue
            except SlackApiError as exc:
                if self._failed(pending, channel or "", exc):
                    blocked.add(channel or "")
                    continue
            self.consumer.ack(pending.delivery)
            self.backlog.remove(pending)

    def _failed(self, pending: _Pending, channel: str, exc: SlackApiError) -> bool:
        """Handle a Slack error; True keeps the event for a retry, False drops it (dead letter)."""
        error = str(exc.response.get("error", "")) if exc.response is not None else ""
        status = exc.response.status_code if exc.response is not None else 0
        event = pending.delivery.event
        if status == 429:
            retry_after = float(exc.response.headers.get("Retry-After", 1))
            self.stats.rate_limited += 1
            logger.info("run %s: Slack rate limit on %s, waiting %.0fs", event.run_id, channel, retry_after)
            self.pacer.block(channel, retry_after)
            return True
        self.stats.errors += 1
        if error in PERMANENT:
            self.consumer.dead_letter(pending.delivery, reason=f"slack: {error}")
            return False
        pending.failures += 1
        delay = BACKOFF_S[min(pending.failures, len(BACKOFF_S)) - 1]
        logger.warning("run %s: Slack error %s (HTTP %s) for %s; retrying in %ss", event.run_id,
                       error or "?", status, event.type, delay)
        self.pacer.block(channel, delay)
        return True

    def _show(self, delivery: Delivery, run: Run, channel: str) -> None:
        event = delivery.event
        thread = self.threads.get(run.id) or self._open_thread(run, channel)
        self.dirty.setdefault(run.id, time.monotonic() + self.update_interval_s)
        if self.threads.posted(run.id, delivery.entry_id):
            return
        if event.type in DECISIONS and thread.approval_ts:
            self._close_approval(run, thread.channel, thread.approval_ts, event)
        reply = _reply(event, run, self.redis)
        if reply is None:
            return
        ts = self._post(thread.channel, *reply, thread_ts=thread.ts, broadcast=_loud(event))
        if event.type == EventType.APPROVAL_REQUESTED:
            self.threads.save_approval(run.id, ts)
        self.threads.mark_posted(run.id, delivery.entry_id)

    def _open_thread(self, run: Run, channel: str) -> Thread:
        if not self.pacer.ready(channel) or not self.threads.claim(run.id, channel):
            raise Wait()
        text, blocks = views.parent(run)
        try:
            ts = self._post(channel, text, blocks)
            self._remember(run, views.outgoing(text)[0])
        except SlackApiError:
            self.threads.release(run.id)
            raise
        self.dirty[run.id] = time.monotonic() + self.update_interval_s
        return self.threads.save(run.id, channel, ts)

    def _post(self, channel: str, text: str, blocks: list[dict[str, Any]], *, thread_ts: str | None = None,
              broadcast: bool = False) -> str:
        if not self.pacer.ready(channel):
            raise Wait()
        self.pacer.sent(channel)
        text, clean = views.outgoing(text, blocks)
        response = self.client.chat_postMessage(channel=channel, text=text, blocks=clean, thread_ts=thread_ts,
                                                unfurl_links=False,
                                                reply_broadcast=True if broadcast and thread_ts else None)
        self.stats.posts += 1
        return str(response["ts"])

    def _close_approval(self, run: Run, channel: str, ts: str, event: Event) -> None:
        """Take the buttons off the approval request; a message that is gone is no reason to stop."""
        text, blocks = views.decided(run, event)
        text, clean = views.outgoing(text, blocks)
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=clean)
        except SlackApiError as exc:
            if exc.response is None or exc.response.get("error") not in PERMANENT:
                raise
            logger.warning("run %s: approval message %s not updated: %s", run.id, ts, exc.response.get("error"))
            return
        self.stats.updates += 1

    def _flush_updates(self) -> None:
        now = time.monotonic()
        for run_id, due in list(self.dirty.items()):
            thread = self.threads.get(run_id)
            if due > now or thread is None:
                continue
            try:
                self._update_parent(run_id, thread)
                del self.dirty[run_id]
            except NotFound:
                del self.dirty[run_id]
            except SlackApiError as exc:
                error = exc.response.get("error") if exc.response is not None else None
                if error in PERMANENT:  # the parent is gone: nothing left to update
                    logger.warning("run %s: parent message %s not updated: %s", run_id, thread.ts, error)
                    del self.dirty[run_id]
                    continue
                retry = exc.response.headers.get("Retry-After") if exc.response is not None else None
                self.dirty[run_id] = now + float(retry or 2)
                logger.warning("run %s: parent update failed (%s); retrying", run_id, error or exc)

    def _update_parent(self, run_id: str, thread: Thread) -> None:
        """Edit the parent message, unless it would read exactly as it does (a Slack call saved)."""
        run = self.store.get(run_id)
        text, blocks = views.outgoing(*views.parent(run))
        if self.shown.get(run_id) == text:
            return
        self.client.chat_update(channel=thread.channel, ts=thread.ts, text=text, blocks=blocks)
        self.stats.updates += 1
        self._remember(run, text)

    def _remember(self, run: Run, text: str) -> None:
        """What the parent shows now; forgotten once the run has finished (its last edit is done)."""
        if run.status.finished:
            self.shown.pop(run.id, None)
        else:
            self.shown[run.id] = text

    def _run(self, event: Event) -> Run | None:
        try:
            return self.store.get(event.run_id)
        except NotFound:
            return None

    def _channel(self, run: Run) -> str | None:
        """Where the run's thread goes (chosen at dispatch); None: the project turned chatops off.

        Runs recorded without a channel (by an older version) go where they were asked for, else
        to the default channel.
        """
        if run.channel is not None:
            return run.channel or None
        return str(run.origin.get("slack_channel") or self.settings.slack_channel)


def _reply(event: Event, run: Run, redis: Redis) -> tuple[str, list[dict[str, Any]]] | None:
    """The thread reply an event gets (text and blocks), or None when it only updates the parent."""
    if _loud(event) and event.data.get("kind") == "rollback_failed":  # with Retry / Pin for the approvers
        data = event.data
        return views.rollback_failed(run, event, safe_versions(redis, str(data.get("service")), str(data.get("env")),
                                                               failed=data.get("from_version")))
    if event.type in FIRST:
        return views.plan(run, [s.name for s in PIPELINE.stages if s.applies_to(run)]), []
    if event.type in IGNORED:
        return None
    if event.type == EventType.APPROVAL_REQUESTED:
        return views.approval(run, event)
    line = views.decision_line(event) if event.type in DECISIONS else views.milestone(event)
    return (line, []) if line else None


def _loud(event: Event) -> bool:
    """Alerts the whole channel must see, not only the thread: traffic is in a state nobody chose."""
    return event.type == EventType.OBSERVABILITY_ALERT and event.data.get("kind") in LOUD_ALERTS
