"""The reconciler: puts back what a deploy whose worker died left behind, from the intents it recorded.

When the router reaps a deploy stage whose worker stopped beating and the run has intents left
(:mod:`agents.deploy.intent`), the stage gets a reconcile job instead of just failing: it rolls each service
the run touched back to its last healthy release, last deployed first (all traffic on the old release,
the new release removed, the live state as before; with no old release the new one is taken down), then
fails the stage saying what it found and did. It only acts on services whose deploy lock the run still
holds, and it is idempotent: a reconcile whose own worker dies is simply run again.

A worker that starts reconciles the intents of runs that have ended (everything was down, or a reconcile
failed) when their lock is free (:func:`leftovers`); a lock another run holds is left to that run's deploy,
which puts the interrupted deploy back before starting its own.
"""
from __future__ import annotations

import logging

from redis import Redis

from agents.context import AgentContext, StageResult
from agents.deploy import intent
from agents.deploy.intent import DeployIntent
from agents.deploy.targets.base import DeployTarget
from agents.deploy.targets.live import LiveTarget
from agents.deploy.targets.registry import Targets
from agents.deploy.targets.state import Release
from orchestra.errors import LockHeld, NotFound, OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.locks import Locks
from orchestra.settings import Settings
from orchestra.store import Audit, RunStore

logger = logging.getLogger(__name__)

HINT = "deploy again when ready; the thread of this run says what was put back"
LOCK_TTL_S = 600  # a worker's start-up reconcile of an ended run's intent


def run(ctx: AgentContext) -> StageResult:
    """The reconcile job of a deploy stage whose worker died: every intent the run left is undone, and the
    stage fails with a summary of what was found and done."""
    intent.take_over(ctx.redis, ctx.run.id)  # a worker that was only paused moves nothing from here on
    left = intent.of_run(ctx.redis, ctx.run.id)
    if not left:  # a reconcile that had finished when its own worker died
        return StageResult(False, "the worker running deploy stopped in the middle of it; nothing it started is "
                           "left to put back", {"hint": HINT, "reconciled": []})
    ctx.progress(f"the worker running deploy stopped in the middle of it; putting back {_services(left)}")
    done, problems = [], []
    with Targets(ctx.settings, ctx.redis, ctx.config, ctx.run.env) as targets:
        for left_by in reversed(left):  # the last service deployed first, as a failed group rolls back
            holder = Locks(ctx.redis).holder(left_by.service, left_by.env)
            if holder is None or holder.run_id != ctx.run.id:
                problems.append(f"{left_by.service}: the run no longer holds its lock; whoever deploys it next "
                                "puts it back first")
                continue
            try:
                back = _undo(targets.for_runtime(left_by.runtime), left_by)
            except OrchestraError as exc:
                problems.append(f"{left_by.service}: could not be put back: {exc.message}")
                continue
            except Exception as exc:  # the engine or cluster said no: the thread hears it, the intent stays
                logger.exception("run %s: could not put %s back", ctx.run.id, left_by.service)
                problems.append(f"{left_by.service}: could not be put back: {type(exc).__name__}: {exc}")
                continue
            done.append(said(left_by, back))
            ctx.emit(EventType.ROLLBACK_EVENT, service=left_by.service, env=left_by.env, automatic=True,
                     reason=f"the worker running deploy stopped {left_by.describe()}", reconciled=True,
                     from_version=left_by.new.version, to_version=back.version if back else None,
                     from_ref=left_by.new.ref, to_ref=back.ref if back else None)
    summary = "; ".join(done + problems)
    Audit(ctx.redis).record("deploy_reconciled", actor="orchestra", run_id=ctx.run.id, summary=summary)
    return StageResult(False, summary, {"hint": HINT, "reconciled": [i.service for i in left],
                                        "problems": problems})


def said(left: DeployIntent, back: Release | None) -> str:
    """``the worker died at canary step 2 (25% on v2): traffic is back on v1, the v2 container was removed``."""
    thing = "container" if left.runtime == "docker" else "release"
    removed = f"the {left.new.version} {thing} was removed"
    where = f"{left.service}: the worker running deploy stopped {left.describe()}"
    if back is None:
        return f"{where}: {left.service} had no earlier release, so {left.new.version} was taken down ({removed})"
    stays = "stays" if left.phase == intent.STARTING else "is back"
    return f"{where}: traffic {stays} on {back.version}, {removed}"


def _undo(target: DeployTarget, left: DeployIntent) -> Release | None:
    inner = getattr(target, "inner", target)  # under registry.WithSecrets
    if not isinstance(inner, LiveTarget):
        raise NotFound(f"the {left.runtime} target cannot put an interrupted deploy back")
    return inner.undo(left)


def _services(left: list[DeployIntent]) -> str:
    return ", ".join(f"{i.service} ({i.describe()})" for i in left)


def leftovers(settings: Settings, redis: Redis) -> list[str]:
    """At a worker's start: put back the local (docker) intents of runs that have ended, each under its
    lock taken for the moment; what was put back. Intents of living runs are their router's; a lock held by
    another run is left to that run's deploy; other runtimes need their run's configuration (its next deploy)."""
    store, done = RunStore(redis), []
    target: LiveTarget | None = None
    try:
        for left in intent.everywhere(redis):
            if left.runtime != "docker" or not _ended(store, left.run_id):
                continue
            target = target or _local(settings, redis)
            if _undo_alone(redis, target, left):
                done.append(f"{left.service} in {left.env} (run {left.run_id})")
    finally:
        if target is not None:
            target.close()  # type: ignore[attr-defined]
    return done


def _undo_alone(redis: Redis, target: LiveTarget, left: DeployIntent) -> bool:
    locks, owner = Locks(redis), f"reconcile-{left.run_id}"
    try:
        locks.acquire(left.service, left.env, owner="orchestra", run_id=owner, ttl_s=LOCK_TTL_S)
    except LockHeld:
        return False
    try:
        back = target.undo(left)
        logger.warning("run %s: put back its interrupted deploy of %s in %s (%s)", left.run_id, left.service,
                       left.env, said(left, back))
        Audit(redis).record("deploy_reconciled", actor="orchestra", run_id=left.run_id, summary=said(left, back))
        EventBus(redis).emit(left.run_id, EventType.ROLLBACK_EVENT, "orchestra", service=left.service, env=left.env,
                             automatic=True, reconciled=True, reason=said(left, back), from_version=left.new.version,
                             to_version=back.version if back else None)
        return True
    finally:
        locks.release(left.service, left.env, run_id=owner)


def _ended(store: RunStore, run_id: str) -> bool:
    try:
        return store.get(run_id).status.finished
    except NotFound:
        return True


def _local(settings: Settings, redis: Redis) -> LiveTarget:
    from agents.build.image import docker_client
    from agents.deploy.targets.local import LocalTarget

    return LocalTarget(docker_client(settings), redis, settings.workdir, owns_client=True)
