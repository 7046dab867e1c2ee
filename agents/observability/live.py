"""The observe stage wired to the deploy targets: scrape targets, the canary judge, the watch's rollback.

* :func:`sync_targets` writes Prometheus's file_sd list from what is live (agents.deploy.targets.state)
  and from the releases of the step being judged (a canary is not "live" until promoted).
* :func:`canary_judge` is the :data:`agents.deploy.strategies.Judge` the deploy agent's canary
  strategy asks after each pause: canary analysis of the :class:`TrafficStep` it is given.
* :class:`LiveReleases` tells the watch what this run put live and rolls it back on the target.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import docker

from agents.context import AgentContext
from agents.deploy.strategies import Judge, TrafficStep
from agents.deploy.targets.registry import Targets, lists_scrape_targets
from agents.deploy.targets.state import Release, all_live, get_live
from agents.observability.autorollback import record_rollback
from agents.observability.canary import CanaryStep, analyze_step, prometheus_for, step_facts
from agents.observability.judge import Verdict
from agents.observability.metrics import MetricsError, Prometheus, Target, write_targets
from agents.observability.policy import Policy, policy_for
from agents.observability.watch import WatchedRelease
from orchestra import limits
from orchestra.events import EventType
from orchestra.locks import Locks

logger = logging.getLogger(__name__)

TARGETS_FILE = Path("prometheus") / "targets.json"


def targets_path(workdir: Path) -> Path:
    """Where the file_sd targets live: Prometheus's config points at this file."""
    return workdir / TARGETS_FILE


def release_target(service: str, env: str, release: Release) -> Target:
    """The scrape target of one running release on the local target."""
    return Target(f"127.0.0.1:{release.port}", service, release.version, env)


def step_targets(step: TrafficStep) -> list[Target]:
    """The scrape targets of the two releases a traffic step splits traffic between; none on a target
    whose Prometheus discovers them itself (kubernetes: pods by their ``orchestra.*`` labels)."""
    if not lists_scrape_targets(step.runtime):
        return []
    return [release_target(step.service, step.env, r) for r in (step.new, step.old) if r is not None]


def live_targets(ctx: AgentContext, extra: Iterable[Target] = ()) -> list[Target]:
    """Every live release with a port (from the live state), plus ``extra`` (e.g. a canary being judged)."""
    seen: dict[tuple[str, str, str], Target] = {}
    for state in all_live(ctx.redis):
        if not lists_scrape_targets(state.runtime):
            continue
        for release in (state.current, state.previous):
            if release is not None:
                seen[(state.service, state.env, release.version)] = release_target(state.service, state.env, release)
    for target in extra:
        seen[(target.service, target.env, target.version)] = target
    return sorted(seen.values(), key=lambda t: (t.service, t.env, t.version))


def sync_targets(ctx: AgentContext, path: Path | None = None, *, extra: Iterable[Target] = ()) -> bool:
    """Rewrite the targets file; True when it changed (new targets need a few seconds of scraping)."""
    path = path or targets_path(ctx.settings.workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.read_text() if path.exists() else None
    write_targets(path, live_targets(ctx, extra))
    return path.read_text() != before


def canary_judge(ctx: AgentContext, *, prom: Prometheus | None = None, policy: Policy | None = None,
                 targets_file: Path | None = None, clock: Callable[[], float] = time.time) -> Judge:
    """The deploy agent's canary-analysis judge: ``deploy.run(ctx, judge=canary_judge(ctx))``.

    A fail publishes the rollback_event; Prometheus out of reach is inconclusive (never a pass)
    with an alert saying so.
    """
    prom = prom or prometheus_for(ctx)
    policy = replace(policy or policy_for(ctx), window_s=0.0, max_wait_s=0.0)  # the strategy paused already
    started: dict[tuple[str, int], float] = {}

    def judge(step: TrafficStep) -> str:
        try:
            return _analyze(step)
        except MetricsError as exc:
            ctx.emit(EventType.OBSERVABILITY_ALERT, kind="metrics_unavailable", step=step.step,
                     message=exc.message, hint=exc.hint)
            return Verdict.INCONCLUSIVE.value

    def _analyze(step: TrafficStep) -> str:
        if step.old is None:  # nothing to compare with
            return Verdict.INCONCLUSIVE.value
        if sync_targets(ctx, targets_file, extra=step_targets(step)):  # a new canary: its window starts now
            started[(step.service, step.step)] = clock()
            ctx.progress(f"scraping {step.service} {step.new.version} from now on; judging after the next pause",
                         kind="canary_scrape_started", service=step.service, step=step.step)
            return Verdict.INCONCLUSIVE.value
        canary = CanaryStep(step.service, step.env, step.old.version, step.new.version, step.step, step.weight,
                            started.setdefault((step.service, step.step), clock() - step.pause_s))
        judgement = analyze_step(ctx, canary, prom=prom, policy=policy, clock=clock)
        if judgement.verdict == Verdict.FAIL:
            record_rollback(ctx, step_facts(canary, judgement, clock() - canary.started_at), policy)
        return judgement.verdict.value

    return judge


class LiveReleases:
    """The watch's view of the deploy targets: what this run made live, and how to undo it."""

    def __init__(self, *, client: docker.DockerClient | None = None, lock_ttl_s: float = limits.OBSERVE_LOCK_S) -> None:
        self.client = client
        self.lock_ttl_s = lock_ttl_s

    def releases(self, ctx: AgentContext) -> list[WatchedRelease]:
        out = []
        for service in ctx.run.services or ctx.config.service_names():
            state = get_live(ctx.redis, service, ctx.run.env)
            if state and state.current and state.run_id == ctx.run.id and state.last_action == "deploy":
                previous = state.previous.version if state.previous else None
                out.append(WatchedRelease(service, ctx.run.env, state.current.version, previous))
        sync_targets(ctx)
        return out

    def rollback(self, ctx: AgentContext, release: WatchedRelease) -> None:
        locks = Locks(ctx.redis)  # the run's own lock (held since it was admitted), or taken for this rollback
        lock = locks.acquire(release.service, release.env, owner="observe", run_id=ctx.run.id, ttl_s=self.lock_ttl_s)
        targets = Targets(ctx.settings, ctx.redis, ctx.config, release.env, docker_client=self.client)
        try:
            targets.for_service(release.service).rollback(
                release.service, release.env, to_version=release.previous_version,
                health=ctx.config.service(release.service).health,
                keep_s=ctx.config.deployment.blue_green.keep_previous, run_id=ctx.run.id)
        finally:
            targets.close()
            if lock.token != ctx.run.fence.get(release.service):
                locks.release(release.service, release.env, run_id=ctx.run.id)


def deploy_judge(ctx: AgentContext) -> Judge | None:
    """The judge the deploy stage should pass to ``deploy.run``: canary analysis when the project
    watches Prometheus metrics (observability.enabled with prometheus), else None (health checks only)."""
    obs = ctx.config.observability
    if not obs.enabled or "prometheus" not in obs.tools:
        return None
    return canary_judge(ctx)
