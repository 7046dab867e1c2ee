"""The observe stage: watch a full release and roll it back on its own when it must.

:func:`run` is the stage after traffic has fully moved: it watches the live versions for
``observability.watch`` seconds and rolls a release back when a threshold stays exceeded for
``rollback.threshold.duration``. Canary steps are judged earlier, during the deploy stage
(:mod:`agents.observability.canary`, wired to the deploy agent in :mod:`agents.observability.live`).

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
from agents.observability.canary import prometheus_for
from agents.observability.live import LiveReleases
from agents.observability.metrics import MetricsError, Prometheus
from agents.observability.policy import Policy, policy_for
from agents.observability.watch import WatchedRelease, watch_release
from orchestra.events import EventType

logger = logging.getLogger(__name__)


class ReleaseSource(Protocol):
    """Where the watch learns what went live, and how it puts the old version back (the deploy agent)."""

    def releases(self, ctx: AgentContext) -> list[WatchedRelease]: ...

    def rollback(self, ctx: AgentContext, release: WatchedRelease) -> None: ...


def run(ctx: AgentContext, *, source: ReleaseSource | None = None, prom: Prometheus | None = None,
        policy: Policy | None = None, sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time) -> StageResult:
    """The observe stage: watch what this run released (by default on the local Docker target) and roll
    it back when it misbehaves."""
    policy = policy or policy_for(ctx)
    source = source or LiveReleases()
    releases = source.releases(ctx)
    if not releases:
        return StageResult(True, "nothing to watch: this run released no new version")
    ctx.progress(f"watching {', '.join(f'{r.service} {r.version}' for r in releases)} for "
                 f"{policy.watch_s:.0f}s", kind="watch_started")
    undo = source.rollback
    try:
        return watch_release(ctx, releases, prom=prom or prometheus_for(ctx), policy=policy,
                             rollback=lambda rel: undo(ctx, rel), sleep=sleep, clock=clock)
    except MetricsError as exc:
        ctx.emit(EventType.OBSERVABILITY_ALERT, kind="metrics_unavailable", message=exc.message, hint=exc.hint)
        return StageResult(False, f"could not watch the release: {exc.message}", {"hint": exc.hint})
