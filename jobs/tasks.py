"""RQ entry points: one thin function per stage, taking the run id."""
from __future__ import annotations

from typing import Any

from redis import Redis
from rq import get_current_job

from agents import build as build_agent
from agents.analysis import stage as analyze_agent
from agents.context import AgentContext, StageResult
from agents.deploy import reconcile as reconcile_agent
from agents.deploy import rollback as rollback_agent
from agents.deploy import stage as deploy_agent
from agents.iac import apply as iac_apply_agent
from agents.iac import drift as drift_agent
from agents.iac import stage as iac_agent
from agents.migrations import stage as migrate_agent
from agents.observability import always_on
from agents.observability import stage as observe_agent
from agents.observability.live import deploy_judge
from agents.observability.traffic import demo_traffic
from agents.testing import stage as testing_agent
from jobs import approvals, timers, workspace
from jobs import drift_check as drift_schedule
from jobs.graph import ANALYZE, BUILD, DEPLOY, DRIFT, IAC, IAC_APPLY, MIGRATE, OBSERVE, ROLLBACK, TEST
from jobs.runner import current_settings, execute_check, execute_stage
from orchestra.errors import NotFound
from orchestra.events import EventBus
from orchestra.settings import Settings
from orchestra.store import Run


def analyze(run_id: str) -> dict[str, Any]:
    """Lint, check imports, structure and security, classify the change's risk."""
    return execute_stage(run_id, ANALYZE, analyze_agent.run)


def test(run_id: str) -> dict[str, Any]:
    """Run the repository's own tests with coverage in an isolated virtualenv; offer generated tests."""
    return execute_stage(run_id, TEST, testing_agent.run)


def build(run_id: str) -> dict[str, Any]:
    """Build one image per service (generating Dockerfiles where missing) and push them."""
    return execute_stage(run_id, BUILD, build_agent.run)


def iac(run_id: str) -> dict[str, Any]:
    """Check the repository's Terraform (skipped when everything deploys to this host and there is none)."""
    return execute_stage(run_id, IAC, iac_agent.run)


def iac_apply(run_id: str) -> dict[str, Any]:
    """Apply exactly the run's saved plan, once an approver approved it at the run's commit."""
    return execute_stage(run_id, IAC_APPLY, lambda ctx: iac_apply_agent.run(ctx, approval=approval_of(ctx.redis,
                                                                                                       ctx.run.id)))


def approval_of(redis: Redis, run_id: str) -> iac_apply_agent.Approval | None:
    """The run's approval record, as the iac_apply stage checks it; None when none was asked for."""
    try:
        req = approvals.get(redis, run_id)
    except NotFound:
        return None
    return iac_apply_agent.Approval(req.stage, req.decision, req.decided_by, req.commit)


def drift(run_id: str) -> dict[str, Any]:
    """Look for drift in the run's environment: a refresh-only plan against its live infrastructure, never applied."""
    return execute_stage(run_id, DRIFT, drift_agent.run)


def migrate(run_id: str) -> dict[str, Any]:
    """Run the change's schema migrations in one-off containers of the new images, before traffic moves."""
    return execute_stage(run_id, MIGRATE, migrate_agent.run)


def deploy(run_id: str) -> dict[str, Any]:
    """Put the built images live with the run's strategy, in depends_on order."""
    def stage(ctx: AgentContext) -> StageResult:
        with demo_traffic(ctx):  # environments with demo_traffic: requests for the canary judge to see
            return deploy_agent.run(ctx, judge=deploy_judge(ctx), pace=True)
    return execute_stage(run_id, DEPLOY, stage)


def deploy_check(run_id: str) -> dict[str, Any]:
    """One scheduled check of a canary that pauses without a worker (:mod:`agents.deploy.paced`)."""
    return execute_check(run_id, DEPLOY, lambda ctx: deploy_agent.check(ctx, judge=deploy_judge(ctx)))


def reconcile(run_id: str) -> dict[str, Any]:
    """A deploy whose worker died: put back what its intents say it left, then fail the stage saying so
    (enqueued by the router's reaper as the deploy stage's job)."""
    return execute_stage(run_id, DEPLOY, reconcile_agent.run)


def observe(run_id: str) -> dict[str, Any]:
    """Begin watching what the run released; the watch goes on in scheduled checks (:func:`check`)."""
    return execute_stage(run_id, OBSERVE, observe_agent.begin)


def observe_check(run_id: str) -> dict[str, Any]:
    """One scheduled look of the watch (enqueued by the router's timers, :mod:`jobs.timers`)."""
    return execute_check(run_id, OBSERVE, observe_agent.look)


def always_on_check(key: str) -> dict[str, Any]:
    """One scheduled look of the always-on watch at a live release (``service:env``; :mod:`jobs.timers`)."""
    job = get_current_job()
    redis = job.connection  # type: ignore[union-attr]
    return timers.run_timed(redis, timers.ALWAYS_ON, key, job.id,  # type: ignore[union-attr]
                            lambda: look_live(redis, current_settings(), key))


def drift_check(repo: str) -> dict[str, Any]:
    """One scheduled drift check of a served repository's environments (``infrastructure.drift_check``)."""
    job = get_current_job()
    redis, settings = job.connection, current_settings()  # type: ignore[union-attr]
    served = repo in settings.repos
    return timers.run_timed(redis, timers.DRIFT_CHECK, repo, job.id,  # type: ignore[union-attr]
                            lambda: drift_schedule.look(redis, settings, repo) if served else None)


def look_live(redis: Redis, settings: Settings, key: str, **options: Any) -> float | None:
    """The always-on check of ``service:env`` with the configuration of the run that put it live."""
    service, _, env = key.partition(":")

    def context(run: Run) -> AgentContext:
        src, config = workspace.prepare(run, settings, redis=redis)
        return AgentContext(run=run, settings=settings, redis=redis, bus=EventBus(redis), workspace=src,
                            config=config, actor="always-on")

    return always_on.check(redis, service, env, context=context, **options).later_s


def rollback(run_id: str) -> dict[str, Any]:
    """Put each service of the run back on its previous (or the requested) version."""
    return execute_stage(run_id, ROLLBACK, rollback_agent.run)


def stop_expired_releases() -> list[str]:
    """Housekeeping, enqueued by the router once a minute: stop releases past their blue-green keep window."""
    redis = get_current_job().connection  # type: ignore[union-attr]
    return deploy_agent.reap(current_settings(), redis) if deploy_agent.live(redis) else []
