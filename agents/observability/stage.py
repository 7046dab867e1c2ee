"""The observe stage: watch a full release and roll it back on its own when it must.

The stage runs after traffic has fully moved: it watches the live versions for ``observability.watch``
seconds and rolls a release back when a threshold stays exceeded for ``rollback.threshold.duration``.
Canary steps are judged earlier, during the deploy stage (:mod:`agents.observability.canary`, wired to
the deploy agent in :mod:`agents.observability.live`).

A watch holds no worker. :func:`begin` saves the watch's state in Redis and asks to be looked at again
in ``poll_s``; each :func:`look` is a scheduled check of a fraction of a second that loads the state,
takes one look at the metrics (:func:`agents.observability.watch.step`) and saves it, until the watch
concludes. :func:`run` drives the same looks in one process (tools and tests).

Every automatic rollback passes the circuit breaker (``rollback.max_automatic_per_hour``)
and is published as a ``rollback_event`` carrying metric, value, threshold,
window, versions and step.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from agents.context import AgentContext, StageResult
from agents.observability.live import LiveReleases
from agents.observability.metrics import MetricsError, Prometheus
from agents.observability.policy import Policy, policy_for
from agents.observability.sources import PROMETHEUS_RUNTIMES, PrometheusSource, WatchSource, runtime_of, source_for
from agents.observability.watch import WatchedRelease, WatchState, forget_state, load_state, save_state, step
from orchestra.events import EventType

logger = logging.getLogger(__name__)


class ReleaseSource(Protocol):
    """Where the watch learns what went live, and how it puts the old version back (the deploy agent)."""

    def releases(self, ctx: AgentContext) -> list[WatchedRelease]: ...

    def rollback(self, ctx: AgentContext, release: WatchedRelease) -> None: ...


def begin(ctx: AgentContext, *, source: ReleaseSource | None = None, policy: Policy | None = None,
          clock: Callable[[], float] = time.time) -> StageResult:
    """Start watching what this run released: a result right away when there is nothing to watch, else
    one that says when to look first (``later_s``), the watch's state saved for the looks."""
    policy = policy or policy_for(ctx)
    obs = ctx.config.observability
    if not obs.enabled:
        return StageResult(True, "not watched: observability.enabled is false in devops_orchestra.yaml")
    releases = (source or LiveReleases()).releases(ctx)
    if not releases:
        return StageResult(True, "nothing to watch: this run released no new version")
    if "prometheus" not in obs.tools:  # only CloudWatch's releases (ECS, Lambda) can be watched without it
        unwatched = [r for r in releases if runtime_of(ctx, r) in PROMETHEUS_RUNTIMES]
        releases = [r for r in releases if r not in unwatched]
        if unwatched:
            ctx.progress(f"not watching {', '.join(f'{r.service} {r.version}' for r in unwatched)}: "
                         "observability.tools has no prometheus to read their metrics from", kind="watch_skipped")
        if not releases:
            return StageResult(True, "not watched: observability.tools has no prometheus to read the metrics from")
    state = WatchState.begin(releases, policy, clock())
    spec = ctx.config.environment(ctx.run.env).demo_traffic
    if spec is not None:  # the release keeps getting demo traffic while it is watched (traffic.WatchTraffic)
        state.demo = spec.model_dump()
    save_state(ctx.redis, ctx.run.id, state)
    ctx.progress(f"watching {', '.join(f'{r.service} {r.version}' for r in releases)} for "
                 f"{policy.watch_s:.0f}s", kind="watch_started", watch_s=policy.watch_s)
    return StageResult(True, "watching", later_s=min(policy.poll_s, policy.watch_s))


def look(ctx: AgentContext, *, source: ReleaseSource | None = None, prom: Prometheus | None = None,
         policy: Policy | None = None, clock: Callable[[], float] = time.time) -> StageResult:
    """One scheduled look at the run's watch: its result when the watch is over, else when to look again."""
    state = load_state(ctx.redis, ctx.run.id)
    if state is None:
        return StageResult(False, "the watch's state is gone (Redis lost it); the release was not watched to "
                                  "the end", {"hint": "look at the service's metrics, or deploy again"})
    policy = policy or policy_for(ctx)
    undo = (source or LiveReleases()).rollback
    now = clock()
    try:
        result = step(ctx, state, source=_sources(ctx, prom), policy=policy, rollback=lambda rel: undo(ctx, rel),
                      now=now)
    except MetricsError as exc:
        ctx.emit(EventType.OBSERVABILITY_ALERT, kind="metrics_unavailable", message=exc.message, hint=exc.hint)
        result = StageResult(False, f"could not watch the release: {exc.message}", {"hint": exc.hint})
    if result is not None:
        forget_state(ctx.redis, ctx.run.id)
        return result
    save_state(ctx.redis, ctx.run.id, state)
    return StageResult(True, "watching", later_s=max(min(policy.poll_s, state.deadline - now), 0.05))


def run(ctx: AgentContext, *, source: ReleaseSource | None = None, prom: Prometheus | None = None,
        policy: Policy | None = None, sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time) -> StageResult:
    """The whole watch in this process: :func:`begin`, then :func:`look` until it concludes."""
    policy = policy or policy_for(ctx)
    result = begin(ctx, source=source, policy=policy, clock=clock)
    while result.later_s is not None:
        sleep(result.later_s)
        result = look(ctx, source=source, prom=prom, policy=policy, clock=clock)
    return result



def _sources(ctx: AgentContext, prom: Prometheus | None) -> Callable[[WatchedRelease], WatchSource]:
    """Where each release's metrics are read: by its runtime, or the given Prometheus (tools and tests)."""
    if prom is not None:
        return lambda rel: PrometheusSource(prom)
    return lambda rel: source_for(ctx, rel)
