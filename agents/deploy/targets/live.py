"""The flow every deploy target shares: roll back, undo a group's finished deploy, reap kept releases.

A :class:`LiveTarget` owns the skeletons over the live state in Redis and calls small hooks for what is
specific to its platform: bringing a release back to all traffic, retiring one, taking down what
reached a service that had no release before, telling whether a kept release still runs, and
restarting a live release's instances (the always-on watch, past a release's guard period).
"""
from __future__ import annotations

import time

from redis import Redis

from agents.deploy import intent
from agents.deploy.intent import DeployIntent
from agents.deploy.strategies import Judge, Shift, blue_green, canary, rolling
from agents.deploy.targets.base import DeployOutcome, Plan, Report
from agents.deploy.targets.state import (
    LiveState,
    Release,
    all_live,
    clear_live,
    get_live,
    record_release,
    rollback_target,
    set_live,
)
from orchestra.errors import NotFound, StageFailed
from orchestra.locks import current_fence


class RestartUnsupported(StageFailed):
    """The platform has no instance of a release to restart (a Lambda function's version)."""


class LiveTarget:
    """The shared half of a deploy target; a subclass supplies the platform's hooks."""

    runtime: str
    redis: Redis
    restartable = False  # whether :meth:`restart` can restart this platform's releases

    def live(self, service: str, env: str) -> LiveState | None:
        return get_live(self.redis, service, env)

    def rollback(self, service: str, env: str, *, to_version: str | None, health: str, keep_s: float,
                 run_id: str) -> tuple[LiveState, bool]:
        """All traffic back on ``to_version`` (default: the previous release); (state, changed?)."""
        state = get_live(self.redis, service, env)
        if state is None or state.current is None:
            raise NotFound(f"nothing of {service} is deployed in {env}", hint="deploy it first")
        target = rollback_target(self.redis, state, to_version)
        if target is None:
            return state, False
        target = self._bring_back(state, target, health, beside=state.current)
        return set_live(self.redis, state.model_copy(update={
            "current": target, "previous": self._keep(state.current, keep_s), "weights": {target.version: 100},
            "last_action": "rollback", "run_id": run_id}), audit="rolled_back"), True

    def restore(self, outcome: DeployOutcome, health: str) -> None:
        """Undo a finished deploy of a group whose later member failed: the old version's traffic first."""
        after = outcome.after
        if after.current is None:  # an outcome always names what it made live; nothing to undo otherwise
            return
        old = outcome.before.current if outcome.before else None
        if old is None:
            self._take_down(after)
        else:
            self._bring_back(after, old, health, beside=None)
        self._retire(after.current, after)
        if outcome.before is not None:
            set_live(self.redis, outcome.before.model_copy(update={"last_action": "rollback"}), audit="deploy_undone")
        else:
            self._forget(after)
        intent.clear(self.redis, after.run_id or "", after.service, after.env)

    def reap(self, now: float | None = None) -> list[str]:
        """Wind down previous releases (of this target) whose keep window is over; returns their names."""
        now = time.time() if now is None else now
        stopped = []
        for state in all_live(self.redis):
            previous = state.previous
            if previous is None or not self._owns(state):
                continue
            if previous.keep_until and previous.keep_until < now and self._running(previous):
                self._wind_down(previous)
                stopped.append(previous.container)
        return stopped

    def restart(self, state: LiveState, release: Release, health: str) -> str:
        """Restart the running instances of ``release`` (live in ``state``) and wait until it serves again;
        what was done, in one phrase. NotFound when the release's instance no longer exists (nothing is
        changed then), StageFailed when it did not come back, RestartUnsupported where there is nothing
        to restart."""
        raise RestartUnsupported(f"{self.runtime} releases have no instance to restart",
                                 hint=f"look at {state.service} {release.version} in {state.env}, or roll it back")

    # -- shared parts of deploy -----------------------------------------------------------------------

    def _triggered(self, plan: Plan, state: LiveState, report: Report, **extra: object) -> None:
        current = state.current
        report("triggered", {"service": plan.service, "env": plan.env, "version": plan.version, "ref": plan.ref,
                             "image": plan.image, "strategy": plan.strategy, "url": state.url, **extra,
                             "from_version": current.version if current else None,
                             "from_ref": current.ref if current else None})

    def _put_back_interrupted(self, plan: Plan, report: Report) -> None:
        """An intent another run left here (its worker died and nothing reconciled it): this run holds the
        lock now, so it puts that deploy back before starting its own (every target's deploy begins here)."""
        fence, left = current_fence(), intent.get(self.redis, plan.service, plan.env)
        if fence is None or left is None or left.run_id == fence.run_id:
            return
        fence.check(plan.service)
        back = self.undo(left)
        report("progress", {"phase": "reconciled", "version": plan.version, "interrupted_run": left.run_id,
                            "message": f"an interrupted deploy of {plan.service} (run {left.run_id}, "
                                       f"{left.describe()}) was put back on {back.version if back else 'nothing'} "
                                       "first"})

    def _put_back(self, before: LiveState | None, plan: Plan) -> None:
        """After a failed deploy: the live state as it was before (then its intent goes)."""
        if before is not None:
            set_live(self.redis, before, audit="deploy_undone")
        else:
            clear_live(self.redis, plan.service, plan.env)
        intent.clear(self.redis, plan.run_id, plan.service, plan.env)

    def _went_live(self, state: LiveState, new: Release, plan: Plan) -> LiveState:
        """Record ``new`` as the current release, what served before kept as the previous one."""
        previous = self._keep(state.current, plan.keep_s) if state.current else None
        record_release(self.redis, plan.service, plan.env, new)
        if (fence := current_fence()) is not None:  # undone by the reconciler until the whole group is live
            intent.went_live(fence, plan.service, plan.env)
        return set_live(self.redis, state.model_copy(update={
            "current": new, "previous": previous, "weights": {new.version: 100},
            "last_action": "deploy", "run_id": plan.run_id}), audit="went_live")

    def undo(self, left: DeployIntent) -> Release | None:
        """Put back what an interrupted deploy left (its intent): all traffic on the release that served
        before (None: the service had none, and the new one is taken down), the new release removed, the
        live state as before, then the intent cleared. Doing it twice changes nothing more."""
        state = left.state or get_live(self.redis, left.service, left.env)
        back = left.old or (left.before.current if left.before else None)
        if back is not None and state is not None:
            back = self._bring_back(state, back, left.health, beside=None)
        elif state is not None:
            self._take_down(state)
        if back is None or back.container != left.new.container:
            self._retire(left.new, state or left.before or _bare(left))
        if left.before is not None:
            action = "rollback" if left.phase == intent.LIVE else left.before.last_action
            set_live(self.redis, left.before.model_copy(update={"last_action": action}))
        else:
            clear_live(self.redis, left.service, left.env)
        intent.clear(self.redis, left.run_id, left.service, left.env)
        return back

    # -- hooks ---------------------------------------------------------------------------------------

    def _keep(self, release: Release, keep_s: float) -> Release:
        """The release that stops serving, kept running for ``keep_s`` for an instant rollback."""
        return release.model_copy(update={"keep_until": time.time() + keep_s})

    def _bring_back(self, state: LiveState, release: Release, health: str, *,
                    beside: Release | None) -> Release:
        """All traffic on ``release`` (``beside`` keeps running without traffic); returns it as it runs."""
        raise NotImplementedError

    def _retire(self, release: Release, state: LiveState) -> None:
        """Remove a release that never served or no longer should."""
        raise NotImplementedError

    def _take_down(self, state: LiveState) -> None:
        """The service had no release before this deploy: take down what reached it."""
        raise NotImplementedError

    def _forget(self, state: LiveState) -> None:
        clear_live(self.redis, state.service, state.env)

    def _owns(self, state: LiveState) -> bool:
        """Whether this target reaps ``state`` (its runtime and location)."""
        return state.runtime == self.runtime and state.location == self._location()

    def _location(self) -> str:
        raise NotImplementedError

    def _running(self, release: Release) -> bool:
        raise NotImplementedError

    def _wind_down(self, release: Release) -> None:
        raise NotImplementedError


def _bare(left: DeployIntent) -> LiveState:
    return LiveState(service=left.service, env=left.env, edge_port=0, edge_prefix="", runtime=left.runtime,
                     location=left.location)


def move(shift: Shift, plan: Plan, judge: Judge) -> list[dict[str, object]]:
    """Move traffic with the plan's strategy; the verdicts of the judged steps."""
    if plan.strategy == "canary":
        return canary(shift, plan.steps, judge, pause_s=plan.pause_s)
    if plan.strategy == "rolling":
        return rolling(shift, judge)
    blue_green(shift)
    return []
