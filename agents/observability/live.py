"""The observe stage wired to the local Docker target: scrape targets, the canary judge, the watch's rollback.

* :func:`sync_targets` writes Prometheus's file_sd list from what is live (agents.deploy.targets.state)
  and from the run's traffic shifts (a canary is not "live" until promoted).
* :func:`canary_judge` is the ``judge(step, weight) -> "pass" | "fail" | "inconclusive"`` the deploy
  agent's canary strategy calls after each pause.
* :class:`LiveReleases` tells the watch what this run put live and rolls it back on the target.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import docker

from agents.context import AgentContext
from agents.deploy.targets.state import all_live, get_live
from agents.observability.autorollback import record_rollback
from agents.observability.judge import Verdict
from agents.observability.metrics import MetricsError, Prometheus, Target, write_targets
from agents.observability.policy import Policy
from agents.observability.stage import CanaryStep, judge_step, policy_for, prometheus_for, step_facts
from agents.observability.watch import Release
from orchestra.events import Event, EventType
from orchestra.store import Locks

logger = logging.getLogger(__name__)

TARGETS_FILE = Path("prometheus") / "targets.json"


def targets_path(workdir: Path) -> Path:
    """Where the file_sd targets live: Prometheus's config points at this file."""
    return workdir / TARGETS_FILE


def live_targets(ctx: AgentContext) -> list[Target]:
    """Every release with a port: live ones from the state, plus this run's canaries from its shift events."""
    seen: dict[tuple[str, str, str], Target] = {}
    for state in all_live(ctx.redis):
        for release in (state.current, state.previous):
            if release is not None:
                seen[(state.service, state.env, release.version)] = Target(
                    f"127.0.0.1:{release.port}", state.service, release.version, state.env)
    for event in ctx.bus.replay(ctx.run.id):
        if event.type == EventType.DEPLOYMENT_PROGRESS and event.data.get("phase") == "shift":
            service, env = str(event.data.get("service")), str(event.data.get("env") or ctx.run.env)
            for version, port in (event.data.get("ports") or {}).items():
                seen[(service, env, version)] = Target(f"127.0.0.1:{port}", service, version, env)
    return sorted(seen.values(), key=lambda t: (t.service, t.env, t.version))


def sync_targets(ctx: AgentContext, path: Path | None = None) -> bool:
    """Rewrite the targets file; True when it changed (new targets need a few seconds of scraping)."""
    path = path or targets_path(ctx.settings.workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.read_text() if path.exists() else None
    write_targets(path, live_targets(ctx))
    return path.read_text() != before


def canary_versions(events: list[Event], service: str | None) -> tuple[str, str, str] | None:
    """(service, new, old) of the latest deployment_triggered event in a run (of ``service`` if given)."""
    for event in reversed(events):
        if event.type != EventType.DEPLOYMENT_TRIGGERED or (service and event.data.get("service") != service):
            continue
        name, new, old = event.data.get("service"), event.data.get("version"), event.data.get("from_version")
        return (str(name), str(new), str(old)) if name and new and old else None
    return None


def canary_judge(ctx: AgentContext, service: str | None = None, *, pause_s: float | None = None,
                 prom: Prometheus | None = None, policy: Policy | None = None, targets_file: Path | None = None,
                 clock: Callable[[], float] = time.time) -> Callable[[int, int], str]:
    """The deploy agent's judge: ``deploy.run(ctx, judge=canary_judge(ctx))``.

    Without ``service`` it judges whichever service the run is deploying now (the latest
    deployment_triggered event). A fail publishes the rollback_event; Prometheus out of reach
    is inconclusive (never a pass) with an alert saying so.
    """
    prom = prom or prometheus_for(ctx)
    policy = replace(policy or policy_for(ctx), window_s=0.0, max_wait_s=0.0)  # the strategy paused already
    pause = ctx.config.deployment.canary.analysis_interval if pause_s is None else pause_s
    started: dict[tuple[str, int], float] = {}

    def judge(step: int, weight: int) -> str:
        try:
            return _judge(step, weight)
        except MetricsError as exc:
            ctx.emit(EventType.OBSERVABILITY_ALERT, kind="metrics_unavailable", step=step, message=exc.message,
                     hint=exc.hint)
            return Verdict.INCONCLUSIVE.value

    def _judge(step: int, weight: int) -> str:
        versions = canary_versions(ctx.bus.replay(ctx.run.id), service)
        if versions is None:
            return Verdict.INCONCLUSIVE.value
        name, new, old = versions
        if sync_targets(ctx, targets_file):  # a new canary: its window starts when scraping does
            started[(name, step)] = clock()
            ctx.progress(f"scraping {name} {new} from now on; judging after the next pause",
                         kind="canary_scrape_started", service=name, step=step)
            return Verdict.INCONCLUSIVE.value
        canary = CanaryStep(name, ctx.run.env, old, new, step, weight,
                            started.setdefault((name, step), clock() - pause))
        judgement = judge_step(ctx, canary, prom=prom, policy=policy, clock=clock)
        if judgement.verdict == Verdict.FAIL:
            record_rollback(ctx, step_facts(canary, judgement, clock() - canary.started_at), policy)
        return judgement.verdict.value

    return judge


class LiveReleases:
    """The watch's view of the local Docker target: what this run made live, and how to undo it."""

    def __init__(self, *, client: docker.DockerClient | None = None, lock_ttl_s: float = 600.0) -> None:
        self.client = client
        self.lock_ttl_s = lock_ttl_s

    def releases(self, ctx: AgentContext) -> list[Release]:
        out = []
        for service in ctx.run.services or ctx.config.service_names():
            state = get_live(ctx.redis, service, ctx.run.env)
            if state and state.current and state.run_id == ctx.run.id and state.last_action == "deploy":
                previous = state.previous.version if state.previous else None
                out.append(Release(service, ctx.run.env, state.current.version, previous))
        sync_targets(ctx)
        return out

    def rollback(self, ctx: AgentContext, release: Release) -> None:
        from agents.build.image import docker_client
        from agents.deploy.targets.local import LocalTarget

        locks = Locks(ctx.redis)
        locks.acquire(release.service, release.env, owner="observe", run_id=ctx.run.id, ttl_s=self.lock_ttl_s)
        client = self.client or docker_client(ctx.settings)
        try:
            LocalTarget(client, ctx.redis, ctx.settings.workdir).rollback(
                release.service, release.env, to_version=release.previous_version,
                health=ctx.config.service(release.service).health,
                keep_s=ctx.config.deployment.blue_green.keep_previous, run_id=ctx.run.id)
        finally:
            if self.client is None:
                client.close()
            locks.release(release.service, release.env, run_id=ctx.run.id)


def deploy_judge(ctx: AgentContext) -> Callable[[int, int], str] | None:
    """The judge the deploy stage should pass to ``deploy.run``: canary analysis when the project
    watches Prometheus metrics (observability.enabled with prometheus), else None (health checks only)."""
    obs = ctx.config.observability
    if not obs.enabled or "prometheus" not in obs.tools:
        return None
    return canary_judge(ctx)
