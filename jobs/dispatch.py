"""Dispatch: the one place that turns an intent into a run.

It resolves the service across the served repositories, checks the policy
and the deploy lock, records the run, publishes its first event and enqueues
its first stage. Ingress (Slack, GitHub, the CLI) calls nothing else.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis

from jobs.graph import PIPELINE, Graph
from jobs.router import ROUTER_GROUP, start_run
from orchestra import policy
from orchestra.errors import LockHeld, OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.repos import resolve_service
from orchestra.settings import Settings
from orchestra.store import Audit, Locks, Run, RunStore

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

logger = logging.getLogger(__name__)

PIPELINE_KINDS = {IntentKind.DEPLOY: "deploy", IntentKind.ROLLBACK: "rollback", IntentKind.VALIDATE: "validate"}
DEFAULT_ENV = "staging"


def dispatch(intent: Intent, *, redis: Redis, settings: Settings, repo: str | Path | None = None,
             graph: Graph = PIPELINE) -> Run:
    """Start a run for ``intent``; raises an OrchestraError the requester can act on."""
    kind = PIPELINE_KINDS.get(intent.kind)
    if kind is None:
        raise OrchestraError(f"{intent.kind.value} does not start a run")
    repo_path, config = resolve_service(intent.service, settings, repo=repo)
    services = _services(intent, config)
    env = intent.env or DEFAULT_ENV
    env_policy = config.environment(env)
    audit = Audit(redis)
    if kind != "validate":
        try:
            policy.check_deploy(intent.user, env, env_policy, rollback=kind == "rollback")
            _check_locks(redis, services, env)
        except OrchestraError as exc:
            audit.record("request_denied", actor=intent.user, reason=str(exc), intent=intent.contract(),
                         source=intent.source)
            raise
    ref, origin = intent.ref, dict(intent.origin)
    if kind == "rollback":  # the ref names the version to go back to, not code to check out
        ref, origin["to_version"] = None, intent.ref
    run = RunStore(redis).create(Run(
        kind=kind, source=intent.source, requested_by=intent.user, repo=str(repo_path),
        services=services, env=env, ref=ref, commit=origin.get("sha"),
        strategy=intent.strategy or env_policy.strategy, origin=origin, channel=_channel(intent, config)))
    audit.record("run_requested", actor=intent.user, run_id=run.id, intent=intent.contract(),
                 source=intent.source)
    bus = EventBus(redis)
    bus.ensure_group(ROUTER_GROUP)
    first = EventType.CODE_PUSH if intent.origin.get("event") == "push" else EventType.RUN_REQUESTED
    bus.emit(run.id, first, intent.user, kind=kind, source=intent.source, services=services, env=env,
             ref=intent.ref, commit=run.commit, strategy=run.strategy, text=intent.text,
             project=config.project.name)
    start_run(redis, settings, run, graph=graph)
    logger.info("run %s: %s of %s to %s requested by %s", run.id, kind, ",".join(services), env, intent.user)
    return run


def _channel(intent: Intent, config: ProjectConfig) -> str:
    """Where the run's thread goes: where it was asked for, else the project's chatops channel ("" when off)."""
    if intent.origin.get("slack_channel"):
        return str(intent.origin["slack_channel"])
    return config.chatops.channel if config.chatops.enabled else ""


def _services(intent: Intent, config: ProjectConfig) -> list[str]:
    """The services to run, in deploy order: the ones named (each must exist here), else all of them."""
    named = intent.services or ([intent.service] if intent.service else [])
    if named:
        return config.deploy_order([config.service(name).name for name in named])
    return config.deploy_order(config.service_names())


def _check_locks(redis: Redis, services: list[str], env: str) -> None:
    store = RunStore(redis)
    for service in services:
        holder = Locks(redis).holder(service, env)
        if holder is not None and not store.get(holder.run_id).status.finished:
            raise LockHeld(holder.owner, holder.run_id, service, env, holder.expires_at)
