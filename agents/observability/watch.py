"""The watch after a full release: thresholds that stay exceeded roll the release back.

A watch is a :class:`WatchState` (what is watched, until when, which limits are breached since when)
and :func:`step`, one look at the metrics that either concludes the watch or leaves it running. The
state is plain data, so the look can happen in a short scheduled check that loads the state from Redis
and saves it again (:mod:`agents.observability.stage`): a watch holds no worker between looks.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError
from redis import Redis

from agents.context import AgentContext, StageResult
from agents.observability.autorollback import RollbackFacts, auto_rollback
from agents.observability.judge import MetricResult, Verdict, format_value
from agents.observability.policy import Policy
from orchestra.events import EventType

if TYPE_CHECKING:
    from agents.observability.sources import WatchSource

logger = logging.getLogger(__name__)

STATE_KEY = "orchestra:watch:{run_id}"
STATE_TTL_S = 24 * 3600  # beyond any watch: a state nobody looks at again goes away on its own


@dataclass(frozen=True)
class WatchedRelease:
    """A version that took all of a service's traffic, and the one it replaced."""

    service: str
    env: str
    version: str
    previous_version: str | None


class Breach(BaseModel):
    """A limit exceeded since ``since``, with the values seen while it was."""

    since: float
    values: list[float] = Field(default_factory=list)


class WatchState(BaseModel):
    """Everything a watch carries from one look to the next."""

    releases: list[tuple[str, str, str, str | None]]  # (service, env, version, previous_version)
    started_at: float
    deadline: float
    looks: int = 0
    open: dict[str, Breach] = Field(default_factory=dict)  # "service metric" -> the breach
    alerted: list[str] = Field(default_factory=list)  # "service metric" alerts already raised
    last: dict[str, dict[str, float | None]] = Field(default_factory=dict)  # service -> metric -> value
    demo: dict[str, object] | None = None  # the environment's demo_traffic, sent while the watch lasts

    @classmethod
    def begin(cls, releases: list[WatchedRelease], policy: Policy, now: float) -> WatchState:
        return cls(releases=[(r.service, r.env, r.version, r.previous_version) for r in releases],
                   started_at=now, deadline=now + policy.watch_s)

    def watched(self) -> list[WatchedRelease]:
        return [WatchedRelease(*r) for r in self.releases]

    def breached(self, rel: WatchedRelease, values: dict[str, float | None], limits: dict[str, float],
                 now: float, hold_s: float) -> tuple[str, float, float, Breach] | None:
        """The first metric that has stayed above its limit for ``hold_s`` (or None)."""
        for metric, limit in limits.items():
            key, value = f"{rel.service} {metric}", values.get(metric)
            if value is None or value <= limit:
                self.open.pop(key, None)
                continue
            breach = self.open.setdefault(key, Breach(since=now))
            breach.values.append(value)
            if now - breach.since >= hold_s:
                return metric, value, limit, breach
        return None


def step(ctx: AgentContext, state: WatchState, *, source: Callable[[WatchedRelease], WatchSource], policy: Policy,
         rollback: Callable[[WatchedRelease], None], now: float) -> StageResult | None:
    """One look at every watched release, its metrics read from ``source(release)``: a result when the
    watch is over (a rollback, or the deadline passed with every metric within its limits), None while
    it goes on. ``state`` is updated in place."""
    limits = policy.limits()
    names = set(limits) | set(policy.alerts)
    state.looks += 1
    for rel in state.watched():
        values = state.last[rel.service] = source(rel).values(rel, names, policy, now)
        _raise_alerts(ctx, rel, values, policy.alerts, state.alerted)
        breach = state.breached(rel, values, limits, now, policy.breach_s)
        if breach is not None:
            return _roll_back(ctx, rel, breach, now, policy, rollback)
    if now < state.deadline:
        return None
    services = ", ".join(f"{r.service} {r.version}" for r in state.watched())
    return StageResult(True, f"watched {services} for {policy.watch_s:.0f}s: every metric within its limits",
                       {"values": state.last, "limits": limits, "looks": state.looks})


def _roll_back(ctx: AgentContext, rel: WatchedRelease, breach: tuple[str, float, float, Breach], now: float,
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
                  alerts: dict[str, float], alerted: list[str]) -> None:
    """One observability_alert per service and metric the first time it crosses its alert threshold."""
    for metric, threshold in alerts.items():
        value, key = values.get(metric), f"{rel.service} {metric}"
        if value is None or value <= threshold or key in alerted:
            continue
        alerted.append(key)
        ctx.emit(EventType.OBSERVABILITY_ALERT, kind="threshold_alert", service=rel.service, env=rel.env,
                 version=rel.version, metric=metric, value=value, threshold=threshold,
                 message=f"{rel.service} {rel.version}: {metric} {format_value(metric, value)} is above the "
                         f"alert threshold {format_value(metric, threshold)}")


def save_state(redis: Redis, run_id: str, state: WatchState) -> None:
    redis.set(STATE_KEY.format(run_id=run_id), state.model_dump_json(), ex=STATE_TTL_S)


def load_state(redis: Redis, run_id: str) -> WatchState | None:
    """The run's watch as its last look left it; None when there is none (or it cannot be read)."""
    raw = redis.get(STATE_KEY.format(run_id=run_id))
    if raw is None:
        return None
    try:
        return WatchState.model_validate_json(raw)
    except ValidationError:
        logger.exception("run %s: the watch's state cannot be read", run_id)
        return None


def forget_state(redis: Redis, run_id: str) -> None:
    redis.delete(STATE_KEY.format(run_id=run_id))
