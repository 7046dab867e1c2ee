"""``/orchestra unpin <service> <env>`` and who may pin or unpin: the environment's approvers.

The pin itself (its record, and the check dispatch makes) is :mod:`orchestra.pins`.
"""
from __future__ import annotations

from redis import Redis

from handlers.reply import Reply, ReplyKind, Who
from orchestra import pins, policy, texts
from orchestra.config import EnvironmentPolicy
from orchestra.config.identities import Identities
from orchestra.errors import OrchestraError, PolicyDenied
from orchestra.intents import Intent
from orchestra.pins import display
from orchestra.repos import resolve_service
from orchestra.settings import Settings
from orchestra.store import Audit


def check_approver(user: str, env: str, env_policy: EnvironmentPolicy, *, identities: Identities | None) -> None:
    """Only the environment's approvers pin, unpin, or retry a failed rollback; the refusal names them."""
    if not env_policy.approvers:
        raise PolicyDenied(texts.NO_APPROVERS.format(env=env), hint=texts.NO_APPROVERS_HINT.format(env=env))
    if not any(policy.same_person(identities, user, a) for a in env_policy.approvers):
        raise PolicyDenied(texts.ONLY_APPROVERS.format(user=display(user), env=env,
                                                       approvers=", ".join(map(display, env_policy.approvers))))


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """``/orchestra unpin <service> <env>``: an approver releases the pin."""
    if not intent.service or not intent.env or intent.services or intent.ref:
        raise OrchestraError(texts.UNPIN_USAGE)
    repo, config = resolve_service(intent.service, settings)
    service = config.service(intent.service).name
    trusted = policy.trusted_policy(str(repo), settings)
    try:
        check_approver(who.user, intent.env, trusted.environment(intent.env), identities=trusted.identities)
    except PolicyDenied as exc:
        Audit(redis).record("unpin_denied", actor=who.user, service=service, env=intent.env, reason=str(exc))
        raise
    pin = pins.get(redis, service, intent.env)
    if pin is None or not pins.drop(redis, pin, "version_unpinned", actor=who.user):
        return Reply(ReplyKind.ANSWER, texts.NOT_PINNED.format(service=service, env=intent.env))
    return Reply(ReplyKind.ANSWER, texts.UNPINNED.format(service=service, env=intent.env, version=pin.version,
                                                         user=who.user), public=True)
