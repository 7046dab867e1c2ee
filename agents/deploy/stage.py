"""The deploy agent: puts the run's images live on each service's target (``services[].runtime``:
``docker``, containers on this host behind nginx; ``kubernetes``, a Deployment per version).

Services deploy in ``depends_on`` order under one lock per service and environment; a failure
rolls the services already deployed back, in reverse order. Every step is an event: the
trigger (versions, strategy, edge URL), health, each weight change (with ports and the edge's
access log for the observe stage), and rollbacks. What each service gets (its image and :class:`Plan`)
comes from :mod:`agents.deploy.plans`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import docker
from redis import Redis

from agents.context import AgentContext, StageResult
from agents.deploy import intent, paced
from agents.deploy.plans import built_images, plan_for
from agents.deploy.strategies import PACED, Judge, Paused, TrafficStep
from agents.deploy.targets.base import DeployOutcome, where
from agents.deploy.targets.local import LocalTarget
from agents.deploy.targets.registry import Targets
from agents.deploy.targets.state import LiveState, Release, all_live, resolve_version
from orchestra import limits
from orchestra.errors import LockHeld, OrchestraError
from orchestra.events import EventType
from orchestra.locks import FENCE, Fence, Locks
from orchestra.settings import Settings

logger = logging.getLogger(__name__)

LOCK_TTL_S = limits.DEPLOY_LOCK_S
FROZEN_HINT = "deploy again after the freeze; rollbacks are still allowed"


def run(ctx: AgentContext, *, judge: Judge | None = None, client: docker.DockerClient | None = None,
        images: dict[str, dict[str, Any]] | None = None, pause_s: float | None = None,
        targets: Targets | None = None, pace: bool = False) -> StageResult:
    """Deploy the images of the run's build (or ``images``) to ``ctx.run.env`` (through ``targets``
    when given: the caller then closes them). With ``pace``, a canary that can go on without a worker
    (:mod:`agents.deploy.paced`) stops at each pause with ``later_s``; :func:`check` carries it on."""
    images = images if images is not None else built_images(ctx)
    if not images:
        return StageResult(False, "nothing to deploy: the run built no images",
                           {"hint": "run the build stage first"})
    wanted = ctx.config.deploy_order(ctx.run.services or list(images))
    missing = [s for s in wanted if s not in images]
    if missing:
        return StageResult(False, f"no image was built for {', '.join(missing)}",
                           {"hint": "build those services first", "missing": missing})
    begun = pace and paced.resuming(ctx)  # a check: the deploy goes on from its intents
    frozen = None if begun else _freeze(ctx)  # once begun, the canary's judge stops it in a freeze
    if frozen is not None:  # checked again here: a freeze may have begun since the run was requested
        return StageResult(False, f"{frozen}: nothing was deployed",
                           {"hint": FROZEN_HINT, "frozen": frozen, "deployed": []})
    order = wanted
    own = targets is None
    targets = targets or Targets(ctx.settings, ctx.redis, ctx.config, ctx.run.env, docker_client=client)
    try:
        with _locks(ctx, order):
            for runtime in dict.fromkeys(ctx.config.service(s).runtime for s in order) if not begun else ():
                targets.for_runtime(runtime).reap()
            pacing = PACED.set(pace and paced.applies(ctx, order))
            try:
                result = _deploy_group(ctx, targets, order, images, judge, pause_s)
            finally:
                PACED.reset(pacing)
            if result.later_s is None:
                intent.conclude(ctx.redis, ctx.run.id)  # live, or undone: nothing is left for the reconciler
            return result
    except LockHeld as exc:
        return StageResult(False, exc.message, {"hint": exc.hint, "lock_holder": exc.owner,
                                                "lock_run": exc.run_id})
    except OrchestraError as exc:  # a target that cannot be opened (kubeconfig, Docker engine)
        return StageResult(False, f"deploy to {ctx.run.env} failed: {exc.message}", {"hint": exc.hint})
    finally:
        if own:
            targets.close()


def _deploy_group(ctx: AgentContext, targets: Targets, order: list[str],
                  images: dict[str, dict[str, Any]], judge: Judge | None,
                  pause_s: float | None) -> StageResult:
    done: list[tuple[str, DeployOutcome]] = []
    judge = _stopped_by_freeze(ctx, judge)
    for service in order:
        left = intent.get(ctx.redis, service, ctx.run.env)
        frozen = _freeze(ctx) if left is None or left.run_id != ctx.run.id else None  # begun: its judge's call
        if frozen is not None:
            rolled = _roll_back_group(ctx, targets, done, reason=frozen)
            return StageResult(False, f"{frozen}: {service} and the rest were not deployed",
                               {"hint": FROZEN_HINT, "frozen": frozen, "rolled_back": rolled, "deployed": []})
        plan, target, report = plan_for(ctx, service, images[service], pause_s), targets.for_service(service), \
            _reporter(ctx, service)
        try:
            outcome = paced.go_on(ctx, target, plan, judge, report) if PACED.get() else None
            outcome = outcome or target.deploy(plan, judge=judge, report=report)
        except Paused as pause:  # the canary goes on in a scheduled check: this job (and worker) is free
            return paced.later(ctx, service, pause)
        except OrchestraError as exc:
            rolled = _roll_back_group(ctx, targets, done, reason=f"{service} failed: {exc.message}")
            return StageResult(False, f"deploy of {service} to {ctx.run.env} failed: {exc.message}",
                               {"failed": service, "error": str(exc), "rolled_back": rolled,
                                "deployed": []})
        done.append((service, outcome))
    live = {s: _describe(o.after) for s, o in done}
    changed = [s for s, o in done if o.changed]
    urls = ", ".join(f"{s} {o.after.url}{_place(o.after)}" for s, o in done)
    summary = (f"live in {ctx.run.env}: {urls}" if changed else f"already live in {ctx.run.env}: {urls}")
    versions = {s: o.after.current.version for s, o in done if o.after.current}
    return StageResult(True, summary, {"deployed": [s for s, _ in done], "changed": changed, "live": live,
                                       "env": ctx.run.env, "versions": versions,
                                       "timings": {s: o.timings for s, o in done},
                                       "verdicts": {s: o.verdicts for s, o in done if o.verdicts}})


def check(ctx: AgentContext, *, judge: Judge | None = None, client: docker.DockerClient | None = None) -> StageResult:
    """One scheduled check of a deploy whose canary goes on without a worker: :func:`run` again, going on from
    the run's intents. A check that breaks unexpectedly puts back what the run moved, and fails the stage."""
    with Targets(ctx.settings, ctx.redis, ctx.config, ctx.run.env, docker_client=client) as targets:
        try:
            return run(ctx, judge=judge, targets=targets, pace=True)
        except Exception as exc:
            logger.exception("run %s: a check of its deploy failed", ctx.run.id)
            with _locks(ctx, ctx.run.services):
                return paced.undone(ctx, targets, f"{type(exc).__name__}: {exc}")


def _place(state: LiveState) -> str:
    """Where a release runs, when it is not this host: `` (kubernetes prod/shop)``."""
    return "" if state.runtime == "docker" else f" ({where(state)})"


def _freeze(ctx: AgentContext) -> str | None:
    """The freeze now in force in the run's environment (from the trusted policy), as a sentence."""
    window = ctx.config.environment(ctx.run.env).frozen()
    return None if window is None else f"{ctx.run.env} is frozen now ({window.describe()})"


def _stopped_by_freeze(ctx: AgentContext, judge: Judge | None) -> Judge | None:
    """``judge``, failing a canary step when a freeze has begun: traffic moves no further, and goes back."""
    if judge is None:
        return None

    def judged(step: TrafficStep) -> str:
        frozen = _freeze(ctx)
        if frozen is None:
            return judge(step)
        ctx.emit(EventType.POLICY_DENIED, summary=f"{frozen}: canary step {step.step} of {step.service} "
                 "stops here and traffic goes back", reason=frozen, service=step.service)
        return "fail"
    return judged


def _roll_back_group(ctx: AgentContext, targets: Targets, done: list[tuple[str, DeployOutcome]], *,
                     reason: str) -> list[str]:
    rolled = []
    for service, outcome in reversed(done):
        if not outcome.changed:
            continue
        targets.for_service(service).restore(outcome, ctx.config.service(service).health)
        previous = outcome.before.current if outcome.before else None
        ctx.emit(EventType.ROLLBACK_EVENT, service=service, env=ctx.run.env, reason=reason,
                 **_versions(outcome.after.current, previous), automatic=True)
        rolled.append(service)
    return rolled


def _reporter(ctx: AgentContext, service: str) -> Any:
    def report(kind: str, data: dict[str, Any]) -> None:
        if kind == "triggered":
            ctx.emit(EventType.DEPLOYMENT_TRIGGERED, **data)
        else:
            ctx.emit(EventType.DEPLOYMENT_PROGRESS, service=service, env=ctx.run.env, **data)
    return report


@contextmanager
def _locks(ctx: AgentContext, services: list[str]) -> Iterator[None]:
    """All the group's locks, or none (LockHeld names who has the one we could not get): the run's own,
    held since it was admitted, or taken here (and released here) for a run that holds none. Every
    traffic change in the block checks the run's tokens (``strategies.Shift.to``)."""
    locks = Locks(ctx.redis)
    taken: list[str] = []
    tokens: dict[str, int] = {}
    try:
        for service in services:
            lock = locks.acquire(service, ctx.run.env, owner=ctx.run.requested_by, run_id=ctx.run.id,
                                 ttl_s=LOCK_TTL_S)
            tokens[service] = lock.token
            if lock.token != ctx.run.fence.get(service):
                taken.append(service)
        fenced = FENCE.set(Fence(ctx.redis, ctx.run.id, ctx.run.env, tokens))
        try:
            yield
        finally:
            FENCE.reset(fenced)
    finally:
        for service in taken:
            locks.release(service, ctx.run.env, run_id=ctx.run.id)


def rollback(ctx: AgentContext, service: str, to_version: str | None = None, *,
             client: docker.DockerClient | None = None, targets: Targets | None = None) -> StageResult:
    """Put all traffic of ``service`` in ``ctx.run.env`` back on ``to_version`` (default: the previous
    release), named by its version, its full SHA or the ref it was deployed from. Idempotent: rolling
    back again changes nothing."""
    config = ctx.config
    health = config.service(service).health
    own = targets is None
    targets = targets or Targets(ctx.settings, ctx.redis, config, ctx.run.env, docker_client=client)
    started = time.monotonic()
    try:
        with _locks(ctx, [service]):
            target = targets.for_service(service)
            before = target.live(service, ctx.run.env)
            if to_version is not None:
                to_version = resolve_version(ctx.redis, service, ctx.run.env, to_version)
            state, changed = target.rollback(service, ctx.run.env, to_version=to_version, health=health,
                                             keep_s=config.deployment.blue_green.keep_previous,
                                             run_id=ctx.run.id)
    except LockHeld as exc:
        return StageResult(False, exc.message, {"hint": exc.hint, "lock_holder": exc.owner})
    finally:
        if own:
            targets.close()
    seconds = round(time.monotonic() - started, 2)
    version = _named(state.current)
    data = {"service": service, "env": ctx.run.env, "changed": changed, "seconds": seconds, "url": state.url,
            **_versions(before.current if before and changed else None, state.current)}
    if not changed:
        return StageResult(True, f"{service} in {ctx.run.env} is already on {version}", data)
    ctx.emit(EventType.ROLLBACK_EVENT, **data, automatic=False)
    return StageResult(True, f"{service} in {ctx.run.env} is back on {version} ({seconds}s)", data)


def _named(release: Release | None) -> str | None:
    """``3f9c2ab (hotfix-v2)``: a release's version, with its ref when it had one."""
    if release is None:
        return None
    return f"{release.version} ({release.ref})" if release.ref else release.version


def _versions(old: Release | None, new: Release | None) -> dict[str, str | None]:
    """A rollback's versions, each with the ref it was deployed from."""
    return {"from_version": old.version if old else None, "from_ref": old.ref if old else None,
            "to_version": new.version if new else None, "to_ref": new.ref if new else None}


def reap(settings: Settings, redis: Redis, *, client: docker.DockerClient | None = None) -> list[str]:
    """Stop previous local releases whose keep window is over (call it now and then, e.g. from a worker;
    a Kubernetes environment's are scaled to zero at the start of its next deploy)."""
    from agents.build.image import docker_client

    own_client = client is None
    target = LocalTarget(client or docker_client(settings), redis, settings.workdir, owns_client=own_client)
    try:
        return target.reap()
    finally:
        target.close()


def live(redis: Redis) -> list[dict[str, Any]]:
    """What runs where: one entry per service and environment (for "what's running?")."""
    return [_describe(state) for state in all_live(redis)]


def _describe(state: LiveState) -> dict[str, Any]:
    return {"service": state.service, "env": state.env, "url": state.url, "weights": state.weights,
            "runtime": state.runtime, "where": where(state), "approximate": state.approximate,
            "current": state.current.model_dump() if state.current else None,
            "previous": state.previous.model_dump() if state.previous else None,
            "last_action": state.last_action, "run_id": state.run_id, "updated_at": state.updated_at}
