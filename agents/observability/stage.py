"""The observe stage: judge canary steps, watch a full release, roll back on its own when it must.

* :func:`judge_step` is what the deploy agent calls between canary steps: it waits
  for the step's window, compares canary and baseline in Prometheus with the
  judge, and on a fail rolls the canary back (through the deploy agent's hook).
* :func:`run` is the stage after traffic has fully moved: it watches the live
  versions for ``observability.watch`` seconds and rolls a release back when a
  threshold stays exceeded for ``rollback.threshold.duration``.

Every automatic rollback passes the circuit breaker (``rollback.max_automatic_per_hour``)
and is published as a ``rollback_event`` carrying metric, value, threshold,
window, versions and step.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agents.context import AgentContext, StageResult
from agents.observability.autorollback import RollbackFacts, alert, auto_rollback
from agents.observability.judge import Judgement, Verdict, judge
from agents.observability.metrics import MetricsError, Prometheus, Selector, collect, requests_served
from agents.observability.policy import Policy, policy_from_config
from agents.observability.watch import Release, watch_release
from orchestra.events import EventType

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class CanaryStep:
    """One canary step: ``weight`` percent of ``service`` traffic on ``canary_version`` since ``started_at``."""

    service: str
    env: str
    baseline_version: str
    canary_version: str
    step: int
    weight: int
    started_at: float


def prometheus_for(ctx: AgentContext) -> Prometheus:
    """The Prometheus the settings point at."""
    return Prometheus(ctx.settings.prometheus_url)


def policy_for(ctx: AgentContext) -> Policy:
    return policy_from_config(ctx.config)


def evaluate_step(prom: Prometheus, step: CanaryStep, policy: Policy, *, now: float) -> Judgement:
    """One look at a step: canary against baseline from the step's start (after one rate window) to now."""
    start = min(step.started_at + policy.rate_window_s, now - 1)
    names = [s.name for s in policy.specs]
    canary_sel = Selector(step.service, step.canary_version)
    baseline_sel = Selector(step.service, step.baseline_version)
    canary = collect(prom, canary_sel, names, start=start, end=now, window=policy.rate_window)
    baseline = collect(prom, baseline_sel, names, start=start, end=now, window=policy.rate_window)
    served = now - step.started_at
    return judge(canary, baseline, policy.specs,
                 canary_requests=prom.value(requests_served(canary_sel, served), at=now) or 0.0,
                 baseline_requests=prom.value(requests_served(baseline_sel, served), at=now) or 0.0,
                 min_requests=policy.min_requests)


def judge_step(ctx: AgentContext, step: CanaryStep, *, prom: Prometheus | None = None,
               policy: Policy | None = None, rollback: Callable[[], None] | None = None,
               sleep: Sleep = time.sleep, clock: Clock = time.time) -> Judgement:
    """Wait out the step's window, judge it, and on a fail roll back through ``rollback``.

    Too little traffic keeps the step waiting (up to ``policy.max_wait_s``) and then stays
    inconclusive: the caller must not promote on an inconclusive verdict.
    """
    prom = prom or prometheus_for(ctx)
    policy = policy or policy_for(ctx)
    _sleep_until(step.started_at + policy.window_s, sleep, clock)
    deadline = step.started_at + policy.window_s + policy.max_wait_s
    while True:
        judgement = evaluate_step(prom, step, policy, now=clock())
        if judgement.verdict != Verdict.INCONCLUSIVE or clock() >= deadline:
            break
        sleep(min(max(policy.window_s / 4, 1.0), max(deadline - clock(), 0.1)))
    window = clock() - step.started_at
    ctx.progress(f"canary step {step.step} ({step.weight}% on {step.canary_version}): "
                 f"{judgement.verdict.value}: {judgement.reason}", kind="canary_judgement", service=step.service,
                 step=step.step, weight=step.weight, window_s=round(window, 1), judgement=judgement.to_dict())
    if judgement.verdict == Verdict.FAIL:
        facts = step_facts(step, judgement, window)
        alert(ctx, facts, judgement.to_dict())
        if rollback is not None:
            auto_rollback(ctx, facts, rollback, policy)
    return judgement


def step_facts(step: CanaryStep, judgement: Judgement, window_s: float) -> RollbackFacts:
    """What a rollback of a failed canary step carries: the culprit metric and the step."""
    return RollbackFacts(step.service, step.env, step.canary_version, step.baseline_version,
                         judgement.reason, window_s, step.step, step.weight, judgement.culprit)


def _sleep_until(at: float, sleep: Sleep, clock: Clock) -> None:
    while (left := at - clock()) > 0:
        sleep(min(left, 5.0))




class ReleaseSource(Protocol):
    """Where the watch learns what went live, and how it puts the old version back (the deploy agent)."""

    def releases(self, ctx: AgentContext) -> list[Release]: ...

    def rollback(self, ctx: AgentContext, release: Release) -> None: ...


def run(ctx: AgentContext, *, source: ReleaseSource | None = None, prom: Prometheus | None = None,
        policy: Policy | None = None, sleep: Sleep = time.sleep, clock: Clock = time.time) -> StageResult:
    """The observe stage: watch what this run released and roll it back when it misbehaves."""
    policy = policy or policy_for(ctx)
    if source is None:  # the local Docker target
        from agents.observability.live import LiveReleases

        source = LiveReleases()
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
