"""An understood request in, a reply out: the handler of its intent, refusals and failures told the same way.

Every channel comes through here (Slack commands, mentions and DMs; GitHub comment commands), so a
request means the same wherever it was typed. Slow work (Redis, config files, dispatch) happens in
the handlers: channels call :func:`handle` off their event loop.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from redis import Redis

from handlers import cancel, deploy, drift, explain, flaky, help, history, pin, rollback, status
from handlers.reply import Reply, ReplyKind, Who
from orchestra.errors import LockHeld, OrchestraError, PolicyDenied
from orchestra.intents import Intent, IntentKind
from orchestra.parse import Parsed
from orchestra.settings import Settings
from orchestra.store import Audit

logger = logging.getLogger(__name__)

ACTIONS = (IntentKind.DEPLOY, IntentKind.ROLLBACK, IntentKind.CANCEL)
HANDLERS: dict[IntentKind, Any] = {
    IntentKind.DEPLOY: deploy.handle, IntentKind.ROLLBACK: rollback.handle, IntentKind.STATUS: status.handle,
    IntentKind.HISTORY: history.handle, IntentKind.EXPLAIN: explain.handle, IntentKind.HELP: help.handle,
    IntentKind.UNPIN: pin.handle, IntentKind.FLAKY: flaky.handle, IntentKind.DRIFT: drift.handle,
}


def handle(parsed: Parsed, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """Carry out a parsed request for ``who``; never raises."""
    intent = parsed.intent.model_copy(update={"user": who.user, "source": who.source,
                                              "origin": {**parsed.intent.origin, **who.origin()}})
    try:
        return _handle(parsed, intent, who, redis=redis, settings=settings)
    except (PolicyDenied, LockHeld) as exc:  # already in the audit trail (dispatch, cancel)
        return Reply(ReplyKind.DENIED, str(exc))
    except OrchestraError as exc:
        _audit_refusal(redis, who, intent, str(exc))
        return Reply(ReplyKind.DENIED, str(exc))
    except Exception:
        logger.exception("request %r from %s failed", parsed.intent.text, who.user)
        return Reply(ReplyKind.FAILED)


def _handle(parsed: Parsed, intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    kind = intent.kind
    if parsed.problem and (kind in ACTIONS or kind in (IntentKind.UNKNOWN, IntentKind.FLAKY)):
        _audit_refusal(redis, who, intent, parsed.problem)
        return Reply(ReplyKind.REFUSED, parsed.problem)
    if parsed.needs_confirmation:
        return confirmation(intent)
    if kind == IntentKind.CANCEL:
        return cancel.handle(intent, who, redis=redis, settings=settings, run_id=parsed.run_id)
    handler = HANDLERS.get(kind)
    if handler is None:
        return Reply(ReplyKind.NOT_UNDERSTOOD, parsed.suggestion or "")
    reply: Reply = handler(intent, who, redis=redis, settings=settings)
    return reply


def confirmation(intent: Intent) -> Reply:
    """Ask before acting on what the model (not the rules) understood."""
    c = intent.contract()
    summary = " ".join(str(v) for v in (c["intent"], c["service"], c["ref"], c["env"] and f"to {c['env']}",
                                        c["strategy"]) if v)
    fields = {k: v for k, v in c.items() if v and k not in ("intent", "service")}
    named = {"services": intent.services} if intent.services else {"service": intent.service}
    payload = json.dumps(fields | {k: v for k, v in named.items() if v} | {"kind": c["intent"]})
    return Reply(ReplyKind.CONFIRM, data={"summary": summary, "payload": payload})


def confirmed(payload: str, text: str) -> Parsed:
    """The intent carried by a confirmation button, re-validated like any input."""
    data = json.loads(payload)
    if data.get("services"):
        data["service"] = data["services"][0]
    return Parsed(Intent(kind=IntentKind(data.pop("kind")), text=text, **data))


def _audit_refusal(redis: Redis, who: Who, intent: Intent, reason: str) -> None:
    Audit(redis).record("request_refused", actor=who.user, reason=reason, text=intent.text,
                        source=who.source, channel=who.place, via=who.via)
