"""Automatic rollback: the circuit breaker, the hook into the deploy agent, the rollback_event."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agents.context import AgentContext
from agents.deploy.targets.state import get_live
from agents.observability.breaker import RollbackBreaker
from agents.observability.judge import MetricResult
from agents.observability.policy import Policy
from orchestra import pins
from orchestra.events import EventType

logger = logging.getLogger(__name__)

RETRY_PAUSES_S = (2.0, 5.0)


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
                  policy: Policy, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Roll back unless disabled, a pin forbids it or the breaker is open; publish the rollback_event. True if done.

    A pin (:mod:`orchestra.pins`, an approver's "this version, until I say otherwise") is read at the moment
    of acting, not when the watch began: one on another version than ``facts.to_version`` stops the rollback
    with a ``rollback_pinned`` alert (nothing moves, the breaker does not count it); one on that version lets
    it go and the rollback_event says so. A rollback that fails is tried again twice; if it still fails, the
    breaker counts it and a ``rollback_failed`` alert says, in the thread and the channel, where traffic is and
    what to do.
    """
    if not policy.enabled:
        ctx.progress(f"automatic rollback of {facts.service} is disabled (rollback.enabled: false); "
                     "a person must decide", kind="rollback_skipped", service=facts.service)
        return False
    pin = pins.get(ctx.redis, facts.service, facts.env)
    if pin is not None and pin.version != facts.to_version:
        _pinned(ctx, facts, pin)
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
    error = _with_retries(rollback, facts, sleep=sleep)
    breaker.record(facts.service, facts.env)  # an attempt counts, whether it went through or not
    if error is not None:
        _rollback_failed(ctx, facts, error)
        return False
    ctx.emit(EventType.ROLLBACK_EVENT, **facts.data(), **({"pinned_by": pin.by} if pin is not None else {}))
    logger.info("run %s: rolled %s back from %s to %s: %s", ctx.run.id, facts.service,
                facts.from_version, facts.to_version, facts.reason)
    return True


def _pinned(ctx: AgentContext, facts: RollbackFacts, pin: pins.Pin) -> None:
    """Say that a pin stopped the automatic rollback, where traffic stays, and what a person can do."""
    where = (f"the pinned version {pin.version} itself" if pin.version == facts.from_version
             else f"{facts.from_version}, not on the pinned {pin.version}")
    ctx.emit(EventType.OBSERVABILITY_ALERT, kind="rollback_pinned", service=facts.service, env=facts.env,
             from_version=facts.from_version, to_version=facts.to_version, pinned_version=pin.version,
             pinned_by=pin.by, pinned_at=pin.at, reason=facts.reason,
             message=(f"NOT rolled back: {facts.reason}, but {pin.refusal().message}. Traffic stays on "
                      f"{where}; a person must decide: `/rollback {facts.service} {pin.version} {facts.env}` "
                      f"goes to the pinned version, or unpin first to go to {facts.to_version}"))
    logger.warning("run %s: automatic rollback of %s in %s from %s to %s stopped: pinned to %s by %s",
                   ctx.run.id, facts.service, facts.env, facts.from_version, facts.to_version, pin.version, pin.by)


def _with_retries(rollback: Callable[[], None], facts: RollbackFacts, *,
                  sleep: Callable[[float], None]) -> Exception | None:
    """Run ``rollback`` until it goes through, at most ``len(RETRY_PAUSES_S) + 1`` times; the last error."""
    error: Exception | None = None
    for attempt, pause in enumerate((*RETRY_PAUSES_S, None), start=1):
        try:
            rollback()
            return None
        except Exception as exc:  # the target's error, whatever it is: the people must hear of it
            error = exc
            logger.warning("rollback of %s in %s, attempt %s failed: %s", facts.service, facts.env, attempt, exc)
            if pause is not None:
                sleep(pause)
    return error


def _rollback_failed(ctx: AgentContext, facts: RollbackFacts, error: Exception) -> None:
    """Say loudly (thread and channel) that traffic may still be on the bad version, and what to do."""
    live = get_live(ctx.redis, facts.service, facts.env)
    serving = live.current.version if live is not None and live.current is not None else facts.from_version
    attempts = len(RETRY_PAUSES_S) + 1
    ctx.emit(EventType.OBSERVABILITY_ALERT, kind="rollback_failed", service=facts.service, env=facts.env,
             from_version=facts.from_version, to_version=facts.to_version, serving=serving, attempts=attempts,
             error=str(error), reason=facts.reason,
             message=(f"ROLLBACK FAILED: {facts.service} in {facts.env} could not go back from "
                      f"{facts.from_version} to {facts.to_version} ({attempts} attempts; last error: {error}). "
                      f"Traffic is still on {serving} ({facts.reason}). Retry with "
                      f"`/rollback {facts.service} {facts.env}`, or pin a version with "
                      f"`/rollback {facts.service} {facts.to_version} {facts.env}`"))
    logger.error("run %s: rollback of %s in %s from %s to %s failed %s times: %s", ctx.run.id, facts.service,
                 facts.env, facts.from_version, facts.to_version, attempts, error)


def alert(ctx: AgentContext, facts: RollbackFacts, detail: dict[str, Any]) -> None:
    data = facts.data()
    data.pop("automatic")
    ctx.emit(EventType.OBSERVABILITY_ALERT, kind="canary_failed", judgement=detail, **data)


def record_rollback(ctx: AgentContext, facts: RollbackFacts, policy: Policy) -> None:
    """A rollback the deploy agent does itself (a failed canary never reaches 100%): count it in the
    breaker and publish the rollback_event with the numbers."""
    RollbackBreaker(ctx.redis, limit=policy.max_rollbacks_per_hour).record(facts.service, facts.env)
    ctx.emit(EventType.ROLLBACK_EVENT, **facts.data())
