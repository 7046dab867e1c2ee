"""Canary pauses that hold no worker: the deploy goes on step by step in scheduled checks.

The deploy job starts a paced canary and applies its first weight; the strategy then raises
:class:`~agents.deploy.strategies.Paused` instead of sleeping, and the stage returns ``later_s`` (the
runner gives it a timer, :mod:`jobs.timers`). Each check runs the deploy agent again
(:func:`agents.deploy.stage.check`), which walks the group in order and, for each service, goes on from the
intent the run recorded (:mod:`agents.deploy.intent`): a service already live is done, a canary is judged
and moved on (the target's ``go_on``: :class:`Paceable`), and a service not begun is deployed.
The intent is written before every move, so a check killed anywhere is fired again by its timer's lease and
neither applies a step twice nor skips one.

Paced: a group whose services all run on a target that can go on from an intent (:data:`RUNTIMES`: docker,
kubernetes, ecs, ec2, lambda), for a run that holds its locks since it was admitted (the router renews them between
checks). In an environment with demo traffic only docker groups are paced: while the canary pauses the router
drives the traffic (:func:`agents.observability.traffic.pace`) to the services' edges, which for docker are
local nginx; other targets' edges are not loopback, so those deploys (like every other deploy) still pause
inside their job.
"""
from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from agents.context import AgentContext, StageResult
from agents.deploy import intent
from agents.deploy.intent import DeployIntent
from agents.deploy.strategies import Judge, Paused
from agents.deploy.targets.base import DeployOutcome, DeployTarget, Plan, Report
from agents.deploy.targets.live import LiveTarget
from agents.deploy.targets.registry import Targets
from agents.deploy.targets.state import get_live
from agents.observability import traffic
from orchestra.locks import cancel_requested

logger = logging.getLogger(__name__)

RUNTIMES = ("docker", "kubernetes", "ecs", "ec2", "lambda")  # targets whose canaries go on from an intent


@runtime_checkable
class Paceable(Protocol):
    """A target that carries a paced canary on from its intent (one check: judged, moved on, live at 100 %)."""

    def go_on(self, plan: Plan, left: DeployIntent, *, judge: Judge | None, report: Report) -> DeployOutcome: ...


def applies(ctx: AgentContext, order: list[str]) -> bool:
    """Whether this run's canaries go on in scheduled checks (see the module's docstring)."""
    return (all(ctx.config.service(s).runtime in RUNTIMES for s in order)
            and (ctx.config.environment(ctx.run.env).demo_traffic is None
                 or all(ctx.config.service(s).runtime == "docker" for s in order))
            and all(s in ctx.run.fence for s in order))


def resuming(ctx: AgentContext) -> bool:
    """Whether the run's deploy has begun (a check goes on with it, rather than starting it)."""
    return bool(intent.of_run(ctx.redis, ctx.run.id))


def go_on(ctx: AgentContext, target: DeployTarget, plan: Plan, judge: Judge | None,
          report: Report) -> DeployOutcome | None:
    """Carry on this run's deploy of ``plan.service`` from its intent: its outcome once live, Paused while its
    canary goes on; None when the run has not begun it here (then it is deployed as usual)."""
    left = intent.get(ctx.redis, plan.service, plan.env)
    if left is None or left.run_id != ctx.run.id:
        return None
    inner = getattr(target, "inner", target)  # under registry.WithSecrets
    if left.phase == intent.LIVE:
        live = get_live(ctx.redis, plan.service, plan.env)
        if live is not None:
            return DeployOutcome(left.before, live, True, {}, list(left.verdicts))
    if left.phase == intent.SHIFTING and left.strategy == "canary" and isinstance(inner, Paceable):
        return inner.go_on(plan, left, judge=judge, report=report)
    # a check killed while this service was starting: put it back as it was, then deploy it afresh
    if isinstance(inner, LiveTarget):
        inner.undo(left)
    return None


def later(ctx: AgentContext, service: str, paused: Paused) -> StageResult:
    """The stage's answer while a canary pauses: look again in ``paused.after_s`` (no worker is held), or at
    once when the run was cancelled meanwhile (the check rolls it back)."""
    after = 0.05 if cancel_requested(ctx.redis, ctx.run.id) is not None else max(paused.after_s, 0.05)
    spec = ctx.config.environment(ctx.run.env).demo_traffic
    if spec is not None:  # the router sends it while no job runs (the judge needs requests to read)
        traffic.pace(ctx.redis, ctx.run.id, ctx.run.env, list(ctx.run.services or ctx.config.service_names()),
                     spec, after_s=after)
    summary = f"canary of {service} at {paused.weight}% (step {paused.step}); judging in {after:.0f}s"
    logger.info("run %s: %s", ctx.run.id, summary)
    return StageResult(True, summary, {"service": service, "step": paused.step, "weight": paused.weight},
                       later_s=after)


def undone(ctx: AgentContext, targets: Targets, why: str) -> StageResult:
    """A check that broke unexpectedly: every service the run moved is put back (last deployed first), and
    the stage fails saying so, rather than leaving traffic split between checks."""
    back, problems = [], []
    for left in reversed(intent.of_run(ctx.redis, ctx.run.id)):
        inner = getattr(targets.for_runtime(left.runtime), "inner", None) or targets.for_runtime(left.runtime)
        try:
            release = inner.undo(left) if isinstance(inner, LiveTarget) else None
        except Exception as exc:
            logger.exception("run %s: could not put %s back", ctx.run.id, left.service)
            problems.append(f"{left.service} could not be put back ({type(exc).__name__}: {exc})")
            continue
        back.append(f"{left.service} is back on {release.version if release else 'nothing'}")
    summary = f"deploy to {ctx.run.env} failed: {why}; " + "; ".join(back + problems)
    return StageResult(False, summary, {"hint": "deploy again when the cause is fixed", "problems": problems})
