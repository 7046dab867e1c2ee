"""The always-on watch: every live release is looked at on a schedule, long after its run's watch ended.

A release enters the always-on set when it goes live (:func:`enrolment`, called from the router's tick
through :mod:`jobs.timers`, finds the live state's current version) and leaves it when it is replaced or
rolled back (a newer version is enrolled in its place) or no longer live. Each service and environment
has one timer; each check (:func:`check`) is a short job that loads the release's run and configuration,
takes one look at the release's metrics through the same sources and limits as the watch
(:mod:`agents.observability.sources`, :class:`agents.observability.policy.Policy`), and says when to look
again (``observability.interval``). The first check of a version only enrols it (no metrics are read).

While a deploy holds the service's lock the check only waits: that deploy's own watch covers it. A limit
that stays exceeded for ``rollback.threshold.duration`` is an anomaly (:mod:`agents.observability.anomaly`):
within ``observability.guard`` of going live the release is rolled back through the automatic rollback
(circuit breaker, retries, loud failure), after it the instance is restarted by its deploy target (not
Lambda's) and the people are alerted; either way the release's thread gets the numbers and a redacted
summary of the crash log.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError
from redis import Redis

from agents.context import AgentContext
from agents.deploy.targets.state import LiveState, all_live, get_live
from agents.observability.anomaly import act
from agents.observability.live import sync_targets
from agents.observability.metrics import MetricsError
from agents.observability.policy import policy_for
from agents.observability.sources import PROMETHEUS_RUNTIMES, WatchSource, source_for
from agents.observability.watch import WatchedRelease, WatchState
from orchestra.errors import NotFound
from orchestra.events import EventType, as_text
from orchestra.locks import Locks
from orchestra.store import Run, RunStore

if TYPE_CHECKING:
    import docker

logger = logging.getLogger(__name__)

STATE_KEY = "orchestra:always-on:{service}:{env}"  # JSON Watched: the current version's breaches and looks
ENROLLED_KEY = "orchestra:always-on:enrolled"  # hash "service:env" -> the version whose checks are scheduled
STATE_TTL_S = 7 * 24 * 3600  # refreshed by every look; a state nobody looks at goes away

ContextFor = Callable[[Run], AgentContext]


class Watched(BaseModel):
    """What the always-on watch carries from one look at a service's live version to the next."""

    version: str
    looks: int = 0
    watch: WatchState  # the breaches and alerts of this version, kept as the watch keeps them
    restarts: int = 0
    rollbacks: int = 0
    held: bool = False  # an automatic rollback was refused (breaker, disabled) or failed: a person decides
    unreadable: bool = False  # the metrics could not be read (said once per version)


@dataclass(frozen=True)
class Check:
    """What one check did, and when to look again (None: this version is not looked at any more)."""

    action: str  # enrolled | looked | waiting | gone | off | unreadable | rolled_back | restarted | alerted
    later_s: float | None
    detail: str = ""


def key_of(service: str, env: str) -> str:
    return f"{service}:{env}"


def enrolment(redis: Redis) -> tuple[list[str], list[str]]:
    """The always-on set against the live state: (keys whose current version is new to it, keys no longer
    live). The new ones are recorded as enrolled here; their timers are the caller's to set or cancel."""
    enrolled = {as_text(k): as_text(v) for k, v in redis.hgetall(ENROLLED_KEY).items()}
    live = {key_of(s.service, s.env): s.current.version for s in all_live(redis) if s.current is not None}
    start = [key for key, version in live.items() if enrolled.get(key) != version]
    stop = [key for key in enrolled if key not in live]
    if start:
        redis.hset(ENROLLED_KEY, mapping={key: live[key] for key in start})
    if stop:
        redis.hdel(ENROLLED_KEY, *stop)
    return start, stop


def check(redis: Redis, service: str, env: str, *, context: ContextFor,
          source: Callable[[AgentContext, WatchedRelease], WatchSource] = source_for,
          client: docker.DockerClient | None = None, clock: Callable[[], float] = time.time) -> Check:
    """One scheduled look at what is live of ``service`` in ``env``."""
    live = get_live(redis, service, env)
    if live is None or live.current is None:
        forget(redis, service, env)
        return Check("gone", None, f"nothing of {service} is live in {env}")
    try:
        run = RunStore(redis).get(live.run_id or "")
    except NotFound:
        return Check("gone", None, f"the run that put {service} {live.current.version} live is gone")
    ctx = context(run)
    obs = ctx.config.observability
    if not obs.enabled or not obs.always_on:
        forget(redis, service, env, keep_enrolled=True)
        return Check("off", None, "observability.always_on (or enabled) is false for this release")
    if live.runtime in PROMETHEUS_RUNTIMES and "prometheus" not in obs.tools:
        forget(redis, service, env, keep_enrolled=True)
        return Check("off", None, "observability.tools has no prometheus to read this release's metrics from")
    holder = Locks(redis).holder(service, env)
    if holder is not None:  # a deploy (or a rollback) is moving this service: its own watch covers it
        return Check("waiting", obs.interval, f"{holder.owner} holds the deploy lock (run {holder.run_id})")
    state = load(redis, service, env)
    if state is None or state.version != live.current.version:  # a new release: it enters the set
        state = Watched(version=live.current.version, watch=WatchState(releases=[], started_at=clock(),
                                                                        deadline=0.0))  # no end: unused
        save(redis, service, env, state)
        if live.runtime == "docker":  # Prometheus scrapes what is live here from the file the watch also keeps
            sync_targets(ctx)
        return Check("enrolled", obs.interval, f"{service} {state.version} is watched every {obs.interval:.0f}s")
    return _look(ctx, live, state, source=source, client=client, now=clock())


def _look(ctx: AgentContext, live: LiveState, state: Watched, *,
          source: Callable[[AgentContext, WatchedRelease], WatchSource], client: docker.DockerClient | None,
          now: float) -> Check:
    assert live.current is not None
    obs, policy = ctx.config.observability, policy_for(ctx)
    rel = WatchedRelease(live.service, live.env, live.current.version,
                         live.previous.version if live.previous is not None else None)
    limits = policy.limits()
    state.looks += 1
    try:
        values = source(ctx, rel).values(rel, set(limits) | set(policy.alerts), policy, now)
    except MetricsError as exc:
        if not state.unreadable:
            state.unreadable = True
            ctx.emit(EventType.OBSERVABILITY_ALERT, kind="metrics_unavailable", service=rel.service, env=rel.env,
                     version=rel.version, message=f"always-on watch of {rel.service} {rel.version} in {rel.env}: "
                                                  f"{exc.message}", hint=exc.hint)
        save(ctx.redis, live.service, live.env, state)
        return Check("unreadable", obs.interval, exc.message)
    state.unreadable = False
    state.watch.last[rel.service] = values
    breach = state.watch.breached(rel, values, limits, now, policy.breach_s)
    if breach is None or state.held:
        save(ctx.redis, live.service, live.env, state)
        return Check("looked", obs.interval, ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
    state.watch.open.clear()  # whatever is done now, the next anomaly must be held for the duration again
    action = act(ctx, live, rel, breach, policy, now=now, client=client)
    state.rollbacks += action == "rolled_back"
    state.restarts += action == "restarted"
    state.held = action == "held"
    save(ctx.redis, live.service, live.env, state)
    return Check(action, obs.interval, f"{breach[0]} {breach[1]} above {breach[2]}")


def load(redis: Redis, service: str, env: str) -> Watched | None:
    raw = redis.get(STATE_KEY.format(service=service, env=env))
    if raw is None:
        return None
    try:
        return Watched.model_validate_json(raw)
    except ValidationError:
        logger.exception("the always-on state of %s in %s cannot be read; starting again", service, env)
        return None


def save(redis: Redis, service: str, env: str, state: Watched) -> None:
    redis.set(STATE_KEY.format(service=service, env=env), state.model_dump_json(), ex=STATE_TTL_S)


def forget(redis: Redis, service: str, env: str, *, keep_enrolled: bool = False) -> None:
    """Drop the service's state; ``keep_enrolled``: its version stays enrolled, so it is not scheduled
    again until another version goes live (checks switched off for this one)."""
    redis.delete(STATE_KEY.format(service=service, env=env))
    if not keep_enrolled:
        redis.hdel(ENROLLED_KEY, key_of(service, env))
