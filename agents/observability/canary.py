"""Canary analysis of one traffic step: canary against baseline in Prometheus, over the step's window.

:func:`analyze_step` waits for the step's window, compares the two versions with
:func:`agents.observability.judge.compare`, reports the judgement and, on a fail, rolls the
canary back through the caller's hook. The deploy agent reaches it through
:func:`agents.observability.live.canary_judge`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agents.context import AgentContext
from agents.observability.autorollback import RollbackFacts, alert, auto_rollback
from agents.observability.judge import Judgement, Verdict, compare
from agents.observability.metrics import Prometheus, Selector, collect, requests_served
from agents.observability.policy import Policy, policy_for

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


def evaluate_step(prom: Prometheus, step: CanaryStep, policy: Policy, *, now: float) -> Judgement:
    """One look at a step: canary against baseline from the step's start (after one rate window) to now."""
    start = min(step.started_at + policy.rate_window_s, now - 1)
    names = [s.name for s in policy.specs]
    canary_sel = Selector(step.service, step.canary_version)
    baseline_sel = Selector(step.service, step.baseline_version)
    canary = collect(prom, canary_sel, names, start=start, end=now, window=policy.rate_window)
    baseline = collect(prom, baseline_sel, names, start=start, end=now, window=policy.rate_window)
    served = now - step.started_at
    return compare(canary, baseline, policy.specs,
                   canary_requests=prom.value(requests_served(canary_sel, served), at=now) or 0.0,
                   baseline_requests=prom.value(requests_served(baseline_sel, served), at=now) or 0.0,
                   min_requests=policy.min_requests)


def analyze_step(ctx: AgentContext, step: CanaryStep, *, prom: Prometheus | None = None,
                 policy: Policy | None = None, rollback: Callable[[], None] | None = None,
                 sleep: Sleep = time.sleep, clock: Clock = time.time) -> Judgement:
    """Wait out the step's window, judge it, and on a fail roll back through ``rollback``.

    Too little traffic keeps the step waiting (up to ``policy.max_wait_s``) and then stays
    inconclusive: the caller must not promote on an inconclusive verdict.
    """
    prom = prom or prometheus_for(ctx)
    policy = policy or policy_for(ctx)
    _sleep_until(step.started_at + policy.window_s, sleep, clock)
    judgement = _evaluate_until(prom, step, policy, sleep, clock)
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


def _evaluate_until(prom: Prometheus, step: CanaryStep, policy: Policy, sleep: Sleep, clock: Clock) -> Judgement:
    """Look again while the step is inconclusive (too little traffic) and ``policy.max_wait_s`` allows."""
    deadline = step.started_at + policy.window_s + policy.max_wait_s
    while True:
        judgement = evaluate_step(prom, step, policy, now=clock())
        if judgement.verdict != Verdict.INCONCLUSIVE or clock() >= deadline:
            return judgement
        sleep(min(max(policy.window_s / 4, 1.0), max(deadline - clock(), 0.1)))


def _sleep_until(at: float, sleep: Sleep, clock: Clock) -> None:
    while (left := at - clock()) > 0:
        sleep(min(left, 5.0))
