"""Rollback: start a run that puts a service back on its previous (or a named) version.

The buttons of a failed automatic rollback come here too (:func:`from_button`): "Retry rollback to
<version>" and "Pin <version>". Their values carry ids only; everything they act on is read again.
"""
from __future__ import annotations

import json
import re

from redis import Redis

from agents.deploy.targets.state import get_live, releases
from handlers import deploy, pin
from handlers.reply import Reply, ReplyKind, Who
from orchestra import pins, policy, texts
from orchestra.errors import OrchestraError, PolicyDenied
from orchestra.events import EventBus, EventType
from orchestra.ids import RUN_ID
from orchestra.intents import ENVIRONMENTS, REF_PATTERN, Intent, IntentKind
from orchestra.settings import Settings
from orchestra.store import Audit, RunStore, begin_once, finish_once, release_once

RETRY, PIN = "retry", "pin"
ANSWERED_KEY = "orchestra:rollback_alert:{run_id}:{service}:{env}"  # JSON: who answered the alert, how
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """A rollback is a run like a deploy; dispatch gives it the rollback stage."""
    return deploy.handle(intent, who, redis=redis, settings=settings)


def safe_versions(redis: Redis, service: str, env: str, *, failed: str | None) -> list[str]:
    """Where ``service`` in ``env`` may go back to: the previous release and, if different, the newest
    release whose run passed its watch (never ``failed``, the version the rollback was leaving)."""
    live = get_live(redis, service, env)
    out = [live.previous.version] if live and live.previous and live.previous.version != failed else []
    bus = EventBus(redis)
    watched = next((r.version for r in releases(redis, service, env) if r.version != failed
                    and any(e.type == EventType.OBSERVATION_PASSED for e in bus.replay(r.run_id))), None)
    return out + [watched] if watched and watched not in out else out


def button_value(run_id: str, service: str, env: str, version: str) -> str:
    return "|".join((run_id, service, env, version))


def from_button(action: str, value: str, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """An approver's Retry or Pin on a ``rollback_failed`` alert: check it against what is true now,
    then start one rollback run (a second click, or a click on the other button, starts nothing)."""
    run_id, service, env, version = _ids(value)
    run = RunStore(redis).get(run_id)
    if service not in run.services or env != run.env:
        raise OrchestraError(texts.BUTTON_FORGED.format(run_id=run_id, why=f"it ran {', '.join(run.services)} "
                                                        f"in {run.env}, not {service} in {env}"))
    trusted = policy.trusted_policy(run.repo, settings)
    try:
        pin.check_approver(who.user, env, trusted.environment(env), identities=trusted.identities)
    except PolicyDenied as exc:
        Audit(redis).record("rollback_button_refused", actor=who.user, run_id=run_id, button=action, reason=str(exc))
        raise
    key = ANSWERED_KEY.format(run_id=run_id, service=service, env=env)
    claim = begin_once(redis, key, token=who.user)
    if claim != "new":
        return Reply(ReplyKind.DENIED, _answered(redis, key) if claim == "done" else texts.BUTTON_PENDING)
    try:
        reply = _act(action, run_id, service, env, version, who, redis=redis, settings=settings)
    except Exception:
        release_once(redis, key, who.user)  # nothing was started: a later click may act
        raise
    started = reply.run
    pipe = redis.pipeline(transaction=True)
    pipe.set(key + ":answer", json.dumps({"by": who.user, "action": action, "service": service, "env": env,
                                          "version": version, "run_id": started.id if started else None}))
    finish_once(pipe, key)
    pipe.execute()
    return reply


def _act(action: str, run_id: str, service: str, env: str, version: str, who: Who, *, redis: Redis,
         settings: Settings) -> Reply:
    live = get_live(redis, service, env)
    current = live.current if live else None
    safe = safe_versions(redis, service, env, failed=current.version if current else None)
    if current is not None and current.version == version:
        if action != PIN:
            raise OrchestraError(texts.ALREADY_ON.format(service=service, env=env, version=version,
                                                         run_id=current.run_id))
        pins.put(redis, pins.Pin(service=service, env=env, version=version, by=who.user, run_id=run_id))
        return Reply(ReplyKind.ANSWER, texts.PIN_ONLY_WHAT.format(service=service, env=env, version=version),
                     public=True)
    busy = next((r for r in RunStore(redis).active() if r.id != run_id and not r.status.finished
                 and service in r.services and r.env == env
                 and r.kind in ("deploy", "rollback")), None)
    if busy is not None:  # queued or running: its lock (or its place in the queue) is the answer
        raise OrchestraError(texts.RUN_BUSY.format(run_id=busy.id, kind=busy.kind, owner=busy.requested_by,
                                                   status=busy.status.value, service=service, env=env))
    if version not in safe:
        raise OrchestraError(texts.NOT_SAFE_NOW.format(version=version, service=service, env=env,
                                                       safe=", ".join(safe) or "none"))
    intent = Intent.model_validate({  # no_wait: a run already holding the lock is the answer, not a queue
        "kind": IntentKind.ROLLBACK, "service": service, "env": env, "ref": version, "no_wait": True,
        "user": who.user, "source": who.source, "origin": {**who.origin(), "alert_run": run_id},
        "text": f"{action} rollback of {service} in {env} to {version}"})
    made = pins.put(redis, pins.Pin(service=service, env=env, version=version, by=who.user, run_id=run_id)) \
        if action == PIN else None
    try:
        return handle(intent, who, redis=redis, settings=settings)
    except Exception:
        if made is not None and made.by == who.user and made.run_id == run_id:
            pins.drop(redis, made, "pin_withdrawn", actor=who.user, why="its rollback could not start")
        raise


def _answered(redis: Redis, key: str) -> str:
    """What the first click on this alert did, and where its run is now."""
    raw = redis.get(key + ":answer")
    if raw is None:
        return texts.BUTTON_PENDING
    done = json.loads(raw)
    fields = {k: done[k] for k in ("service", "env", "version", "run_id")}
    status = RunStore(redis).get(done["run_id"]).status.value if done["run_id"] else ""
    template = {RETRY: texts.RETRY_WHAT, PIN: texts.PIN_WHAT}[done["action"]] if done["run_id"] else \
        texts.PIN_ONLY_WHAT
    return texts.BUTTON_TAKEN.format(by=pins.display(done["by"]), what=template.format(**fields, status=status))


def _ids(value: str) -> tuple[str, str, str, str]:
    """run id, service, env, version from a button's value; anything else is refused."""
    parts = value.split("|")
    if len(parts) != 4 or not RUN_ID.fullmatch(parts[0]) or not _SERVICE.match(parts[1]) \
            or parts[2] not in ENVIRONMENTS or not REF_PATTERN.match(parts[3]):
        raise OrchestraError(f"that button's value ({value[:80]!r}) is not one I made; nothing was done")
    return parts[0], parts[1], parts[2], parts[3]
