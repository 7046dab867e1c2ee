"""The watch after a full release: thresholds that stay exceeded roll the release back."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.context import AgentContext, StageResult
from agents.observability.autorollback import RollbackFacts, auto_rollback
from agents.observability.judge import MetricResult, Verdict, format_value
from agents.observability.metrics import Prometheus, Selector, metric_queries
from agents.observability.policy import Policy
from orchestra.events import EventType

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchedRelease:
    """A version that took all of a service's traffic, and the one it replaced."""

    service: str
    env: str
    version: str
    previous_version: str | None


@dataclass
class _Breach:
    since: float
    values: list[float] = field(default_factory=list)


@dataclass
class _Tracker:
    """Which (service, metric) pairs are above their limit, and since when."""

    open: dict[tuple[str, str], _Breach] = field(default_factory=dict)

    def update(self, rel: WatchedRelease, values: dict[str, float | None], limits: dict[str, float],
               now: float, hold_s: float) -> tuple[str, float, float, _Breach] | None:
        """The first metric that has stayed above its limit for ``hold_s`` (or None)."""
        for metric, limit in limits.items():
            key, value = (rel.service, metric), values.get(metric)
            if value is None or value <= limit:
                self.open.pop(key, None)
                continue
            breach = self.open.setdefault(key, _Breach(since=now))
            breach.values.append(value)
            if now - breach.since >= hold_s:
                return metric, value, limit, breach
        return None


def current_values(prom: Prometheus, rel: WatchedRelease, names: set[str], policy: Policy,
                   now: float) -> dict[str, float | None]:
    """The live version's metrics right now."""
    queries = metric_queries(Selector(rel.service, rel.version), policy.rate_window)
    return {name: prom.value(queries[name], at=now) for name in sorted(names) if name in queries}


def watch_release(ctx: AgentContext, releases: list[WatchedRelease], *, prom: Prometheus, policy: Policy,
                  rollback: Callable[[WatchedRelease], None], sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.time) -> StageResult:
    """Watch ``releases`` for ``policy.watch_s``; roll one back when a limit holds for ``policy.breach_s``."""
    limits, tracker, alerted = policy.limits(), _Tracker(), set[tuple[str, str]]()
    names = set(limits) | set(policy.alerts)
    deadline = clock() + policy.watch_s
    last: dict[str, dict[str, float | None]] = {}
    while True:
        now = clock()
        for rel in releases:
            values = last[rel.service] = current_values(prom, rel, names, policy, now)
            _raise_alerts(ctx, rel, values, policy.alerts, alerted)
            breach = tracker.update(rel, values, limits, now, policy.breach_s)
            if breach is not None:
                return _roll_back(ctx, rel, breach, now, policy, rollback)
        if now >= deadline:
            break
        sleep(min(policy.poll_s, max(deadline - now, 0.05)))
    services = ", ".join(f"{r.service} {r.version}" for r in releases)
    return StageResult(True, f"watched {services} for {policy.watch_s:.0f}s: every metric within its limits",
                       {"values": last, "limits": limits})


def _roll_back(ctx: AgentContext, rel: WatchedRelease, breach: tuple[str, float, float, _Breach], now: float,
               policy: Policy, rollback: Callable[[WatchedRelease], None]) -> StageResult:
    metric, value, limit, info = breach
    mean = sum(info.values) / len(info.values)
    reason = (f"{metric} stayed above {format_value(metric, limit)} for {now - info.since:.0f}s "
              f"after the release (now {format_value(metric, value)})")
    result = MetricResult(metric, Verdict.FAIL, reason, canary=mean, threshold=limit,
                          samples=(len(info.values), 0))
    if rel.previous_version is None:
        ctx.emit(EventType.OBSERVABILITY_ALERT, kind="threshold_breach", service=rel.service, env=rel.env,
                 metric=metric, value=mean, threshold=limit, message=f"{reason}; no earlier version to go back to")
        return StageResult(False, f"{rel.service} {rel.version}: {reason}; nothing to roll back to",
                           {"metric": metric, "value": mean, "threshold": limit})
    facts = RollbackFacts(rel.service, rel.env, rel.version, rel.previous_version, reason,
                          now - info.since, "release", 100, result)
    done = auto_rollback(ctx, facts, lambda: rollback(rel), policy)
    verb = "rolled back to" if done else "NOT rolled back (see the alert) to"
    return StageResult(False, f"{rel.service} {rel.version} {verb} {rel.previous_version}: {reason}",
                       {**facts.data(), "rolled_back": done})


def _raise_alerts(ctx: AgentContext, rel: WatchedRelease, values: dict[str, float | None],
                  alerts: dict[str, float], alerted: set[tuple[str, str]]) -> None:
    """One observability_alert per service and metric the first time it crosses its alert threshold."""
    for metric, threshold in alerts.items():
        value = values.get(metric)
        if value is None or value <= threshold or (rel.service, metric) in alerted:
            continue
        alerted.add((rel.service, metric))
        ctx.emit(EventType.OBSERVABILITY_ALERT, kind="threshold_alert", service=rel.service, env=rel.env,
                 version=rel.version, metric=metric, value=value, threshold=threshold,
                 message=f"{rel.service} {rel.version}: {metric} {format_value(metric, value)} is above the "
                         f"alert threshold {format_value(metric, threshold)}")
