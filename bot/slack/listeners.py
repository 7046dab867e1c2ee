"""Slack listeners: slash commands, mentions, DMs and buttons. Each acks first, then works.

The work (Redis, config, dispatch) runs in a thread so the event loop keeps
acking other requests within Slack's 3 seconds whatever it is doing.
Slack retries (same event_id, or the same button click) are answered once.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial, wraps
from typing import Any, TypeVar

from redis import Redis
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import texts, views
from bot.slack.threads import Threads
from handlers import approve as approve_handler
from handlers import rollback as rollback_handler
from handlers.catalog import Catalog
from handlers.intake import confirmed, handle
from handlers.reply import Reply, ReplyKind, Who
from handlers.understand import Understander
from orchestra.errors import OrchestraError
from orchestra.ids import RUN_ID
from orchestra.settings import Settings
from orchestra.store import begin_once, claim_once, finish_once

logger = logging.getLogger(__name__)

T = TypeVar("T")
WORK_THREADS = 2
COMMANDS = ("/deploy", "/rollback", "/orchestra", "/status", "/history", "/explain", "/cancel")


@dataclass
class Deps:
    """What the listeners need; built once per process."""

    settings: Settings
    redis: Redis
    understander: Understander
    catalog: Catalog
    # Two worker threads: each /deploy costs ~40 ms of CPU, and with four threads that work took the GIL
    # from the event loop often enough to make acks under a burst of 50 a third slower (bench_slack.py);
    # two still let a slow model call and a dispatch overlap.
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(WORK_THREADS, "slack-work"))

    async def off_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (Redis, config files, dispatch) without holding up the acks."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args, **kwargs))


def register(app: AsyncApp, deps: Deps) -> None:
    """Attach every listener to ``app``."""
    for command in COMMANDS:
        app.command(command)(_on_command(deps))
    app.event("app_mention")(_on_mention(deps))
    app.event("message")(_on_message(deps))
    app.action(views.APPROVE)(_on_approval(deps, approve=True))
    app.action(views.REJECT)(_on_approval(deps, approve=False))
    app.action(views.CONFIRM_YES)(_on_confirm(deps, go=True))
    app.action(views.CONFIRM_NO)(_on_confirm(deps, go=False))
    app.action(re.compile(rf"^{views.ROLLBACK_RETRY}(:\d+)?$"))(_on_rollback_button(deps, rollback_handler.RETRY))
    app.action(re.compile(rf"^{views.ROLLBACK_PIN}(:\d+)?$"))(_on_rollback_button(deps, rollback_handler.PIN))


def _guarded(listener: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Never let a listener raise: Bolt would then drop an ack already given (the user sees a timeout).

    Anything unexpected is logged with its traceback and the user gets a generic answer.
    The listener must take ``body`` and ``client``.
    """
    @wraps(listener)
    async def guarded(**kwargs: Any) -> None:
        try:
            await listener(**kwargs)
        except Exception:
            logger.exception("slack request failed")
            await _tell_failure(kwargs["body"], kwargs["client"])
    return guarded


async def _tell_failure(body: dict[str, Any], client: AsyncWebClient) -> None:
    event = body.get("event") or {}
    channel = body.get("channel_id") or (body.get("channel") or {}).get("id") or event.get("channel")
    user = body.get("user_id") or (body.get("user") or {}).get("id") or event.get("user")
    if not (channel and user):
        return
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=texts.FAILED,
                                        thread_ts=event.get("thread_ts") or event.get("ts"))
    except Exception:  # Slack itself is the problem: the log has it
        logger.exception("could not tell %s in %s about the failure", user, channel)


def handle_text(text: str, who: Who, deps: Deps) -> Reply:
    """Understand ``text`` and carry it out (blocking; call it off the event loop).

    Inside a run's thread, the message is about that run ("@orchestra cancel").
    """
    run_id = Threads(deps.redis).run_of(who.place or "", who.thread) if who.thread else None
    if run_id and not RUN_ID.search(text):
        text = f"{text} {run_id}"
    parsed = deps.understander.understand(text, deps.catalog.service_names())
    return handle(parsed, who, redis=deps.redis, settings=deps.settings)


def _on_command(deps: Deps) -> Any:
    @_guarded
    async def listener(ack: Any, command: dict[str, Any], respond: Any, body: dict[str, Any],
                       client: AsyncWebClient) -> None:
        await ack()
        who = Who(command["user_id"], place=command["channel_id"], via="command")
        key = f"slack:trigger:{command.get('trigger_id') or command.get('response_url')}"
        if await deps.off_loop(begin_once, deps.redis, key) != "new":
            return
        text = f"{command['command']} {command.get('text', '')}".strip()
        reply = await deps.off_loop(handle_text, text, who, deps)
        await deps.off_loop(finish_once, deps.redis, key)  # a crash before this lets Slack's retry through
        out, blocks = views.outgoing(*views.reply(reply))
        await respond(text=out, blocks=blocks, response_type="in_channel" if reply.public else "ephemeral")
    return listener


def _on_mention(deps: Deps) -> Any:
    @_guarded
    async def listener(event: dict[str, Any], body: dict[str, Any], client: AsyncWebClient) -> None:
        thread_ts = event.get("thread_ts") or event["ts"]
        who = Who(event["user"], place=event["channel"], thread=thread_ts, via="mention")
        await _converse(deps, client, body, who, event.get("text", ""))
    return listener


def _on_message(deps: Deps) -> Any:
    @_guarded
    async def listener(event: dict[str, Any], body: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("channel_type") != "im" or event.get("bot_id") or event.get("subtype"):
            return  # channel messages reach us as app_mention; ignore edits and bots
        who = Who(event["user"], place=event["channel"], thread=event.get("thread_ts"), via="dm")
        await _converse(deps, client, body, who, event.get("text", ""))
    return listener


async def _converse(deps: Deps, client: AsyncWebClient, body: dict[str, Any], who: Who, text: str) -> None:
    key = f"slack:event:{body.get('event_id')}"
    if await deps.off_loop(begin_once, deps.redis, key) != "new":
        logger.info("slack retry of event %s ignored", body.get("event_id"))
        return
    reply = await deps.off_loop(handle_text, text, who, deps)
    await deps.off_loop(finish_once, deps.redis, key)  # a crash before this lets Slack's retry through
    out, blocks = views.outgoing(*views.reply(reply))
    channel = str(who.place)
    if reply.public or who.via == "dm" or reply.kind == ReplyKind.STARTED:
        await client.chat_postMessage(channel=channel, thread_ts=who.thread, text=out, blocks=blocks)
    else:
        await client.chat_postEphemeral(channel=channel, user=who.user, thread_ts=who.thread,
                                        text=out, blocks=blocks)


def _on_approval(deps: Deps, *, approve: bool) -> Any:
    @_guarded
    async def listener(ack: Any, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        channel = body["channel"]["id"]
        thread_ts = body.get("message", {}).get("thread_ts") or body.get("container", {}).get("message_ts")
        run_id, _, commit = str(action.get("value", "")).partition("|")
        if not await deps.off_loop(claim_once, deps.redis, f"slack:action:{user}:{action.get('action_ts')}"):
            return
        who = Who(user, place=channel, thread=thread_ts, via="button")
        reply = await deps.off_loop(approve_handler.handle, run_id, who, approve=approve, commit=commit or None,
                                    redis=deps.redis, settings=deps.settings)
        if reply.kind == ReplyKind.DENIED:  # an accepted decision shows in the thread through the relay
            await client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts,
                                            text=views.outgoing(texts.APPROVAL_NOT_ACCEPTED.format(
                                                message=texts.escape(reply.text)))[0])
    return listener


def _on_rollback_button(deps: Deps, action_name: str) -> Any:
    """Retry or Pin on a failed rollback's alert: an approver's click starts one rollback run (told in the
    thread); anyone else, a stale or a second click gets an answer only the clicker sees."""
    @_guarded
    async def listener(ack: Any, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user, channel = body["user"]["id"], body["channel"]["id"]
        thread_ts = body.get("message", {}).get("thread_ts") or body.get("container", {}).get("message_ts")
        if not await deps.off_loop(claim_once, deps.redis, f"slack:action:{user}:{action.get('action_ts')}"):
            return  # Slack's retry of this very click
        who = Who(user, place=channel, thread=thread_ts, via="button")
        reply = await deps.off_loop(_rollback_button, action_name, str(action.get("value", "")), who, deps)
        out, blocks = views.outgoing(*views.reply(reply))
        if reply.public or reply.kind == ReplyKind.STARTED:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=out, blocks=blocks)
        else:
            await client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=out, blocks=blocks)
    return listener


def _rollback_button(action_name: str, value: str, who: Who, deps: Deps) -> Reply:
    """The handler's reply; a refusal (not an approver, stale, forged) becomes a DENIED reply."""
    try:
        return rollback_handler.from_button(action_name, value, who, redis=deps.redis, settings=deps.settings)
    except OrchestraError as exc:
        return Reply(ReplyKind.DENIED, str(exc))


def _on_confirm(deps: Deps, *, go: bool) -> Any:
    @_guarded
    async def listener(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any,
                       client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        if not await deps.off_loop(claim_once, deps.redis, f"slack:action:{user}:{action.get('action_ts')}"):
            return
        if not go:
            await respond(text=texts.render(Reply(ReplyKind.DROPPED)), replace_original=True)
            return
        who = Who(user, place=body["channel"]["id"], via="button")
        parsed = confirmed(str(action.get("value", "{}")), body.get("message", {}).get("text", ""))
        reply = await deps.off_loop(handle, parsed, who, redis=deps.redis, settings=deps.settings)
        await respond(text=views.outgoing(texts.render(reply))[0], replace_original=True)
    return listener
