"""What a Slack request does once understood: start a run, answer a question, cancel, or refuse.

Slow work lives here (Redis, config files, dispatch); the listeners in
handlers/slack.py ack first and call :func:`execute` off the event loop.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from bot.slack import texts, views
from jobs.dispatch import dispatch
from orchestra.errors import LockHeld, OrchestraError, PolicyDenied
from orchestra.intents import Intent, IntentKind
from orchestra.parse import Parsed
from orchestra.settings import Settings
from orchestra.store import Audit

logger = logging.getLogger(__name__)

RUN_KINDS = (IntentKind.DEPLOY, IntentKind.ROLLBACK)
QUESTIONS = (IntentKind.STATUS, IntentKind.HISTORY, IntentKind.EXPLAIN)
ACTIONS = (*RUN_KINDS, IntentKind.CANCEL)


@dataclass
class Reply:
    """What to tell the user; ``public`` replies go in the channel/thread, the others only to them."""

    text: str
    public: bool = False
    run_id: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Who:
    """Who asked, and where."""

    user: str
    channel: str
    thread_ts: str | None = None
    via: str = "command"  # command | mention | dm | button


def execute(parsed: Parsed, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """Carry out a parsed request for ``who``; never raises."""
    intent = parsed.intent.model_copy(update={"user": who.user, "source": "slack", "origin": _origin(who)})
    try:
        return _execute(parsed, intent, who, redis=redis, settings=settings)
    except (PolicyDenied, LockHeld) as exc:  # already in the audit trail (dispatch, cancel)
        return Reply(texts.DENIED.format(message=exc))
    except OrchestraError as exc:
        _audit_refusal(redis, who, intent, str(exc))
        return Reply(texts.DENIED.format(message=exc))
    except Exception:
        logger.exception("slack request %r from %s failed", parsed.intent.text, who.user)
        return Reply(texts.FAILED)


def _execute(parsed: Parsed, intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    kind = intent.kind
    if kind == IntentKind.UNKNOWN or (parsed.problem and kind in ACTIONS):
        if parsed.problem:
            _audit_refusal(redis, who, intent, parsed.problem)
            return Reply(texts.REFUSED.format(problem=parsed.problem))
        return Reply(texts.NOT_UNDERSTOOD)
    if kind == IntentKind.HELP:
        return Reply(texts.HELP)
    if parsed.needs_confirmation:
        return confirmation(intent)
    if kind in RUN_KINDS:
        run = dispatch(intent, redis=redis, settings=settings)
        return Reply(texts.STARTED.format(run_id=run.id, kind=run.kind, services=", ".join(run.services),
                                          env=run.env), run_id=run.id)
    if kind == IntentKind.CANCEL:
        from handlers.cancel import cancel

        return Reply(cancel(intent, run_id=parsed.run_id, redis=redis, settings=settings))
    if kind in QUESTIONS:
        from agents.chatops.answers import answer

        return Reply(answer(intent, redis=redis, settings=settings).text, public=who.via != "command")
    return Reply(texts.NOT_UNDERSTOOD)


def confirmation(intent: Intent) -> Reply:
    """Ask before acting on what the model (not the rules) understood."""
    c = intent.contract()
    summary = " ".join(str(v) for v in (c["intent"], c["service"], c["ref"], c["env"] and f"to {c['env']}",
                                        c["strategy"]) if v)
    payload = json.dumps({k: v for k, v in c.items() if v and k != "intent"} | {"kind": c["intent"]})
    text = texts.CONFIRM.format(summary=summary)
    return Reply(text, blocks=views.confirm(summary, payload))


def confirmed(payload: str, text: str) -> Parsed:
    """The intent carried by a confirmation button, re-validated like any input."""
    data = json.loads(payload)
    return Parsed(Intent(kind=IntentKind(data.pop("kind")), text=text, **data))


def _origin(who: Who) -> dict[str, Any]:
    origin: dict[str, Any] = {"slack_channel": who.channel, "slack_user": who.user, "via": who.via}
    if who.thread_ts:
        origin["slack_thread_ts"] = who.thread_ts
    return origin


def _audit_refusal(redis: Redis, who: Who, intent: Intent, reason: str) -> None:
    Audit(redis).record("request_refused", actor=who.user, reason=reason, text=intent.text,
                        source="slack", channel=who.channel, via=who.via)
