"""Pins: a service held in one environment on one version until one of its approvers unpins it.

One Redis key per service and environment (who, when, which version), written and removed together
with its audit entry. While a pin stands, dispatch refuses every deploy of that service there and
every rollback to another version (:func:`check`); a rollback to the pinned version is how the pin
itself is put in place. Pins are made by the "Pin <version>" button of a failed rollback
(``handlers/rollback.py``) and released with ``/orchestra unpin`` (``handlers/pin.py``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field
from redis import Redis

from orchestra import texts
from orchestra.errors import PolicyDenied
from orchestra.store import AUDIT_STREAM

PIN_KEY = "orchestra:pin:{service}:{env}"  # JSON Pin


class Pin(BaseModel):
    """Who pinned ``service`` in ``env`` to ``version``, and when."""

    service: str
    env: str
    version: str
    by: str
    at: float = Field(default_factory=time.time)
    run_id: str | None = None  # the failed rollback's run whose button made the pin

    def refusal(self) -> PolicyDenied:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.at))
        return PolicyDenied(texts.PINNED.format(service=self.service, env=self.env, version=self.version,
                                                by=display(self.by), at=when))


def get(redis: Redis, service: str, env: str) -> Pin | None:
    raw = redis.get(PIN_KEY.format(service=service, env=env))
    return Pin.model_validate_json(raw) if raw else None


def put(redis: Redis, pin: Pin) -> Pin:
    """Record ``pin`` and its audit entry in one step, unless a pin already stands (that one is returned)."""
    entry = _entry("version_pinned", actor=pin.by, run_id=pin.run_id, service=pin.service, env=pin.env,
                        version=pin.version)
    if redis.eval(_PUT, 2, PIN_KEY.format(service=pin.service, env=pin.env), AUDIT_STREAM, pin.model_dump_json(),
                  *entry):
        return pin
    current = get(redis, pin.service, pin.env)
    return current if current is not None else put(redis, pin)


def drop(redis: Redis, pin: Pin, action: str, *, actor: str, **detail: Any) -> bool:
    """Remove ``pin`` if it is still the one standing, with its audit entry ``action`` in the same step."""
    entry = _entry(action, actor=actor, run_id=pin.run_id, service=pin.service, env=pin.env,
                        version=pin.version, pinned_by=pin.by, **detail)
    key = PIN_KEY.format(service=pin.service, env=pin.env)
    return bool(redis.eval(_DROP_IF_SAME, 2, key, AUDIT_STREAM, pin.model_dump_json(), *entry))


def _entry(action: str, *, actor: str, run_id: str | None, **detail: Any) -> list[str]:
    """An audit entry's fields (as :class:`orchestra.store.Audit` writes them), flat for a Lua XADD."""
    fields = {"action": action, "actor": actor, "run_id": run_id or "", "ts": str(time.time()),
              "detail": json.dumps(detail, default=str)}
    return [x for pair in fields.items() for x in pair]


def check(redis: Redis, services: Sequence[str], env: str, *, kind: str, to_version: str | None) -> None:
    """Raise :class:`PolicyDenied` when a pin forbids this deploy or rollback of ``services`` in ``env``."""
    if kind not in ("deploy", "rollback"):
        return
    for service in services:
        pin = get(redis, service, env)
        if pin is not None and not (kind == "rollback" and to_version == pin.version):
            raise pin.refusal()



def display(user: str) -> str:
    """A Slack mention for a user id, ``@name`` otherwise."""
    return f"<@{user}>" if user.startswith("U") and user.isalnum() else f"@{user}"


_PUT = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
"""
_DROP_IF_SAME = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
return 1
"""
