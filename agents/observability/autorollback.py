"""Automatic rollback: the circuit breaker, the hook into the deploy agent, the rollback_event."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.context import AgentContext
from agents.observability.breaker import RollbackBreaker
from agents.observability.judge import MetricResult
from agents.observability.policy import Policy
from orchestra.events import EventType

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RollbackFacts:
    """What a rollback_event carries."""

    service: str
    env: str
    from_version: str
    to_version: str
    reason: str
    window_s: float
    step: int | str | None = None
    weight: int | None = None
    metric: MetricResult | None = None

    def data(self) -> dict[str, Any]:
        m = self.metric
        return {"service": self.service, "env": self.env, "from_version": self.from_version,
                "to_version": self.to_version, "reason": self.reason, "window_s": round(self.window_s, 1),
                "step": self.step, "weight": self.weight, "automatic": True,
                "metric": m.metric if m else None, "value": m.canary if m else None,
                "threshold": _limit(m), "baseline_value": m.baseline if m else None,
                "p_value": m.p_value if m else None}


def _limit(m: MetricResult | None) -> float | None:
    """The line the metric crossed: its absolute threshold, or baseline plus the tolerance."""
    if m is None:
        return None
    if m.threshold is not None and m.canary is not None and m.canary > m.threshold:
        return m.threshold
    if m.baseline is not None and m.allowed is not None:
        return m.baseline + m.allowed
    return m.threshold


def auto_rollback(ctx: AgentContext, facts: RollbackFacts, rollback: Callable[[], None],
                  policy: Policy) -> bool:
    """Roll back unless disabled or the breaker is open; publish the rollback_event. True if done."""
    if not policy.enabled:
        ctx.progress(f"automatic rollback of {facts.service} is disabled (rollback.enabled: false); "
                     "a person must decide", kind="rollback_skipped", service=facts.service)
        return False
    breaker = RollbackBreaker(ctx.redis, limit=policy.max_rollbacks_per_hour)
    if not breaker.allows(facts.service, facts.env):
        count = breaker.recent(facts.service, facts.env)
        ctx.emit(EventType.OBSERVABILITY_ALERT, kind="circuit_breaker_open", service=facts.service,
                 env=facts.env, rollbacks_last_hour=count, limit=policy.max_rollbacks_per_hour,
                 reopens_at=breaker.reopens_at(facts.service, facts.env),
                 message=(f"circuit breaker open: {count} automatic rollbacks of {facts.service} in "
                          f"{facts.env} in the last hour (limit {policy.max_rollbacks_per_hour}); not "
                          f"rolling back {facts.from_version} on my own, a person must decide"))
        return False
    rollback()
    breaker.record(facts.service, facts.env)
    ctx.emit(EventType.ROLLBACK_EVENT, **facts.data())
    logger.info("run %s: rolled %s back from %s to %s: %s", ctx.run.id, facts.service,
                facts.from_version, facts.to_version, facts.reason)
    return True


def alert(ctx: AgentContext, facts: RollbackFacts, detail: dict[str, Any]) -> None:
    data = facts.data()
    data.pop("automatic")
    ctx.emit(EventType.OBSERVABILITY_ALERT, kind="canary_failed", judgement=detail, **data)


def record_rollback(ctx: AgentContext, facts: RollbackFacts, policy: Policy) -> None:
    """A rollback the deploy agent does itself (a failed canary never reaches 100%): count it in the
    breaker and publish the rollback_event with the numbers."""
    RollbackBreaker(ctx.redis, limit=policy.max_rollbacks_per_hour).record(facts.service, facts.env)
    ctx.emit(EventType.ROLLBACK_EVENT, **facts.data())
