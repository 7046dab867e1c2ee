"""Dispatch: the one place that turns an intent into a run.

It resolves the service across the served repositories, adds the dependencies
that are not running, checks the trusted policy (the served repository's default
branch or the operator's policy file, never the ref being deployed), admits the
run under the deploy locks of its services (taken with the run's record in one
step, or queued behind the holder, or refused when the request says ``no_wait``:
see :mod:`orchestra.locks`), publishes its first event and enqueues its first
stage once it holds its locks. Ingress (Slack, GitHub,
the CLI) calls nothing else: :func:`dispatch`, or :func:`dispatch_run` to also
learn which dependencies were added.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis

from agents.deploy.targets.state import get_live
from jobs import timers
from jobs.graph import PIPELINE, Graph
from jobs.router import ROUTER_GROUP, start_run
from orchestra import limits, pins, policy, texts
from orchestra.errors import LockHeld, OrchestraError, PolicyDenied
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.locks import Admission, Locks
from orchestra.repos import resolve_service
from orchestra.settings import Settings
from orchestra.store import Audit, Run, RunStore

if TYPE_CHECKING:
    from orchestra.config import ProjectConfig

logger = logging.getLogger(__name__)

PIPELINE_KINDS = {IntentKind.DEPLOY: "deploy", IntentKind.ROLLBACK: "rollback", IntentKind.VALIDATE: "validate",
                  IntentKind.PLAN: "plan", IntentKind.DRIFT: "drift"}
READ_ONLY = frozenset({"validate", "plan", "drift"})  # change nothing live: no deploy lock, pin or deploy policy
DEFAULT_ENV = "staging"


@dataclass(frozen=True)
class Dispatched:
    """A started (or queued) run, and the dependencies dispatch added to it (name -> why, in deploy order)."""

    run: Run
    added_dependencies: dict[str, str] = field(default_factory=dict)
    admission: Admission | None = None  # None for a run that takes no lock (validate)
    waiting: str | None = None  # why a queued run waits: who holds the lock, and its place in the queue


def dispatch(intent: Intent, *, redis: Redis, settings: Settings, repo: str | Path | None = None,
             graph: Graph = PIPELINE, lock_ttl_s: float = limits.DEPLOY_LOCK_S) -> Run:
    """Start (or queue) a run for ``intent``; raises an OrchestraError the requester can act on."""
    return dispatch_run(intent, redis=redis, settings=settings, repo=repo, graph=graph, lock_ttl_s=lock_ttl_s).run


def dispatch_run(intent: Intent, *, redis: Redis, settings: Settings, repo: str | Path | None = None,
                 graph: Graph = PIPELINE, lock_ttl_s: float = limits.DEPLOY_LOCK_S) -> Dispatched:
    """Like :func:`dispatch`, and say which dependencies joined the run because they were not running,
    and whether it holds its locks or waits for them. ``lock_ttl_s``: how long a lock outlives an owner
    that stops renewing it."""
    kind = PIPELINE_KINDS.get(intent.kind)
    if kind is None:
        raise OrchestraError(f"{intent.kind.value} does not start a run")
    repo_path, config = resolve_service(intent.service, settings, repo=repo)
    env = intent.env or DEFAULT_ENV
    audit = Audit(redis)
    try:
        trusted = policy.trusted_policy(str(repo_path), settings)
    except OrchestraError as exc:
        audit.record("request_denied", actor=intent.user, reason=str(exc), intent=intent.contract(),
                     source=intent.source)
        raise
    config = trusted.govern(config)
    if config.infrastructure.drift_check is not None:  # the scheduled drift check: its timer, if it has none yet
        timers.enrol_drift(redis, [str(repo_path)])
    named = _services(intent, config)
    needed = _missing_dependencies(redis, config, named, env) if kind == "deploy" else {}
    added = {dep: _why(dependents, env) for dep, dependents in needed.items()}
    services = config.deploy_order([*named, *added])
    env_policy = config.environment(env)
    if kind not in READ_ONLY:
        try:
            pins.check(redis, services, env, kind=kind, to_version=intent.ref)  # a failed rollback's pin
            policy.check_deploy(intent.user, env, env_policy, identities=trusted.identities,
                                rollback=kind == "rollback")
            if needed and env == "production":
                raise _production_needs(needed)
        except OrchestraError as exc:
            audit.record("request_denied", actor=intent.user, reason=str(exc), intent=intent.contract(),
                         source=intent.source)
            raise
    ref, origin = intent.ref, dict(intent.origin)
    if kind == "rollback":  # the ref names the version to go back to, not code to check out
        ref, origin["to_version"] = None, intent.ref
    run = Run(kind=kind, source=intent.source, requested_by=intent.user, repo=str(repo_path),
              services=services, env=env, ref=ref, commit=origin.get("sha"),
              strategy=intent.strategy or env_policy.strategy, requested_strategy=intent.strategy,
              origin=origin, channel=_channel(intent, config))
    if graph.first(run) is None:  # before anything is recorded or locked
        raise OrchestraError(f"nothing in the pipeline runs for a {kind} request yet")
    detail = {"intent": intent.contract(), "source": intent.source}
    admission = None
    if kind in READ_ONLY:  # changes nothing live: no lock
        RunStore(redis).create(run)
        audit.record("run_requested", actor=intent.user, run_id=run.id, **detail)
    else:
        admission = Locks(redis).admit(run, ttl_s=lock_ttl_s, no_wait=intent.no_wait, detail=detail)
        if admission.outcome == "refused":
            raise _refusal(admission, services, env)
        run = run.model_copy(update={"fence": admission.fence})
    bus = EventBus(redis)
    bus.ensure_group(ROUTER_GROUP)
    first = EventType.CODE_PUSH if intent.origin.get("event") == "push" else EventType.RUN_REQUESTED
    bus.emit(run.id, first, intent.user, kind=kind, source=intent.source, services=services, env=env,
             ref=intent.ref, commit=run.commit, strategy=run.strategy, text=intent.text,
             project=config.project.name, added_dependencies=added, policy=trusted.source)
    if admission is not None and admission.outcome == "queued":
        waiting = _waiting(admission, services, env)
        holder = admission.holder
        bus.emit(run.id, EventType.LOCK_WAITING, "orchestra", summary=waiting, position=admission.position,
                 holder=holder.owner if holder else None, holder_run=holder.run_id if holder else admission.ahead)
        logger.info("run %s: queued: %s", run.id, waiting)
        return Dispatched(run, added, admission, waiting)
    start_run(redis, settings, run, graph=graph)
    logger.info("run %s: %s of %s to %s requested by %s (added, not running: %s)", run.id, kind,
                ",".join(services), env, intent.user, ",".join(added) or "none")
    return Dispatched(run, added, admission)


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


def _missing_dependencies(redis: Redis, config: ProjectConfig, named: list[str],
                          env: str) -> dict[str, list[str]]:
    """What ``named`` needs (directly or through other services) that is not named and not running in
    ``env``: each such dependency, in deploy order, with the services that depend on it directly."""
    dependents: dict[str, list[str]] = {}
    todo, seen = list(named), set(named)
    while todo:
        service = todo.pop(0)
        for dep in config.service(service).depends_on:
            if dep not in named:
                dependents.setdefault(dep, []).append(service)
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return {dep: dependents[dep] for dep in config.deploy_order(dependents) if not _running(redis, dep, env)}


def _running(redis: Redis, service: str, env: str) -> bool:
    """Has ``service`` a current release in ``env``? (The live state the deploy target records.)"""
    live = get_live(redis, service, env)
    return live is not None and live.current is not None


def _why(dependents: list[str], env: str) -> str:
    return texts.NEEDED.format(dependents=_and(dependents), verb=_depend(dependents), env=env)


def _production_needs(needed: dict[str, list[str]]) -> PolicyDenied:
    needs = "; ".join(texts.PRODUCTION_NEEDS_ONE.format(dependents=_and(users), verb=_depend(users), dependency=dep)
                      for dep, users in needed.items())
    them = "it" if len(needed) == 1 else "them"
    return PolicyDenied(texts.PRODUCTION_NEEDS.format(needs=needs),
                        hint=texts.PRODUCTION_HINT.format(them=them, names=", ".join(needed)))


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _depend(names: list[str]) -> str:
    return "depends" if len(names) == 1 else "depend"


def _waiting(admission: Admission, services: list[str], env: str) -> str:
    """Who holds the lock a queued run waits for, and its place in the queue (for its thread)."""
    if admission.holder is not None:
        return texts.QUEUED_BEHIND.format(service=admission.holder.service, env=env, owner=admission.holder.owner,
                                          holder_run=admission.holder.run_id, position=admission.position)
    return texts.QUEUED_AHEAD.format(service=", ".join(services), env=env, ahead=admission.ahead,
                                     position=admission.position)


def _refusal(admission: Admission, services: list[str], env: str) -> LockHeld:
    """The refusal of a ``no_wait`` request whose lock is taken (already in the audit trail)."""
    holder = admission.holder
    if holder is not None:
        refused = LockHeld(holder.owner, holder.run_id, holder.service, env, holder.expires_at)
    else:
        refused = LockHeld("the next queued run", admission.ahead or "?", ", ".join(services), env, 0)
    refused.hint = texts.REFUSED_HINT
    return refused
