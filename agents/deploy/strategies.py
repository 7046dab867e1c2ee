"""How traffic moves from the old release to the new one: blue-green, canary, rolling.

A strategy only moves weights through the target's :class:`~agents.deploy.targets.base.TrafficSplit`
(an nginx edge, a Service selector, an HTTPRoute) and asks the judge; starting, health-checking and
undoing are the target's job. Every weight change is reported through ``on_shift``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

from agents.deploy import intent
from agents.deploy.targets.base import Health, TrafficSplit
from agents.deploy.targets.state import Release
from orchestra.errors import StageFailed
from orchestra.locks import Fence, current_fence

logger = logging.getLogger(__name__)

STRATEGIES = ("blue-green", "canary", "rolling")
ROLLING_STEPS = (25, 50, 75, 100)
MAX_INCONCLUSIVE = 2  # re-asks before an inconclusive canary step counts as a failure


@dataclass(frozen=True)
class TrafficStep:
    """What a judge is asked about: ``weight`` percent of ``service`` on ``new``, the rest on ``old``."""

    service: str
    env: str
    new: Release
    old: Release | None
    step: int  # from 1
    weight: int  # percent of traffic on the new release
    pause_s: float  # how long the strategy waited at this weight before asking
    runtime: str = "docker"  # the target serving it: where the judge finds its metrics


Judge = Callable[[TrafficStep], str]  # what a strategy asks between steps: "pass" | "fail" | "inconclusive"


class CanaryFailed(StageFailed):
    """The judge failed a canary step."""


class Paused(Exception):  # noqa: N818 -- not an error: the canary goes on later
    """A paced canary stopped at a weight below 100 %: look again in ``after_s`` (scheduled checks, no sleep)."""

    def __init__(self, step: int, weight: int, after_s: float) -> None:
        super().__init__(f"canary step {step} at {weight}%: looking again in {after_s:.1f}s")
        self.step, self.weight, self.after_s = step, weight, after_s


# Set by the deploy agent when its canaries go on in scheduled checks (agents/deploy/stage.py): the first
# weight is applied and :class:`Paused` raised instead of sleeping in the job.
PACED: ContextVar[bool] = ContextVar("orchestra_paced_canary", default=False)


@dataclass
class Shift:
    """The two releases of one service between which traffic moves, and where it moves."""

    traffic: TrafficSplit
    new: Release
    old: Release | None
    on_shift: Callable[[int, dict[str, int]], None]  # (step, applied split) after each change
    service: str
    env: str
    runtime: str = "docker"
    # The deploy lock's fence of the run moving traffic (set by the deploy agent while it holds its locks).
    fence: Fence | None = field(default_factory=current_fence, repr=False)

    def to(self, weight: int, step: int = 0, *, verdict: dict[str, object] | None = None) -> None:
        """Put ``weight`` percent on the new release and the rest on the old one, if the run still owns
        the service's lock (its token is the lock's) and was not asked to cancel: else StageFailed, and
        nothing moves. The intent (:mod:`agents.deploy.intent`) is recorded first, so a worker killed
        mid-way leaves the reconciler what it needs to put traffic back (with ``verdict``, the judged step
        that let it move on: recorded in the same write)."""
        if self.old is None and weight == 0:
            raise StageFailed("cannot take all traffic off the only release")
        if self.fence is not None:
            self.fence.check(self.service)
            intent.shifting(self.fence, service=self.service, env=self.env, runtime=self.runtime, new=self.new,
                            old=self.old, step=step, weight=weight, verdict=verdict)  # before the traffic moves
        self.on_shift(step, self.traffic.split(self.new, self.old, weight))

    def at(self, step: int, weight: int, pause_s: float) -> TrafficStep:
        """The question for the judge once ``weight`` percent has been on the new release for ``pause_s``."""
        return TrafficStep(self.service, self.env, self.new, self.old, step, weight, pause_s, self.runtime)


def health_judge(target: Health, release: Release, health: str) -> Judge:
    """The default judge: the new release passes a step while it answers its health check."""
    def judge(step: TrafficStep) -> str:
        try:
            target.wait_healthy(release, health, timeout=5)
        except StageFailed:
            return "fail"
        return "pass"
    return judge


def blue_green(shift: Shift) -> None:
    """All traffic to the new release at once (it was health-checked before)."""
    shift.to(100, step=1)


def canary(shift: Shift, steps: list[int], judge: Judge, *, pause_s: float,
           sleep: Callable[[float], None] = time.sleep) -> list[dict[str, object]]:
    """Walk the steps; before leaving each step below 100 %, wait ``pause_s`` and ask the judge."""
    if shift.old is None:  # nothing to compare with: the first release takes all traffic
        shift.to(100, step=len(steps))
        return []
    verdicts: list[dict[str, object]] = []
    for number, weight in enumerate(steps, start=1):
        shift.to(weight, step=number)
        if weight >= 100:
            break
        if PACED.get() and pause_s > 0:
            raise Paused(number, weight, pause_s)  # judged by go_on, in a check once the pause is over
        verdict = _judged(judge, shift.at(number, weight, pause_s), sleep)
        verdicts.append({"step": number, "weight": weight, "verdict": verdict})
        if verdict != "pass":
            raise CanaryFailed(f"canary step {number} ({weight}% on {shift.new.version}) judged {verdict}",
                               hint="the previous version has all traffic again")
    return verdicts


def _judged(judge: Judge, asked: TrafficStep, sleep: Callable[[float], None]) -> str:
    for _ in range(MAX_INCONCLUSIVE + 1):
        sleep(asked.pause_s)
        verdict = str(judge(asked))
        if verdict in ("pass", "fail"):
            return verdict
        logger.info("canary step %s at %s%%: inconclusive, asking again", asked.step, asked.weight)
    return "inconclusive"


def go_on(shift: Shift, steps: list[int], judge: Judge, *, step: int, weight: int, since: float, asked: int,
          applied: bool, pause_s: float, clock: Callable[[], float] = time.time) -> None:
    """One scheduled check of a paced canary, from what its intent recorded: ``weight`` percent at ``step``
    since ``since`` (``applied``: the traffic really moved there), after ``asked`` inconclusive answers.

    Returns when the canary reached 100 % (the caller promotes); raises :class:`Paused` to be looked at
    again, :class:`CanaryFailed` on a failing verdict, StageFailed when the run was cancelled or lost its
    lock. Each move records the intent first, so a check killed anywhere is simply run again: a weight the
    intent names but the traffic never reached is applied then, and no step is judged twice or skipped."""
    if shift.fence is not None:
        shift.fence.check(shift.service)  # a cancel (or a lost lock) stops the canary at once, in any pause
    if not applied:  # killed between the intent and the move: make the move, then a whole pause
        shift.to(weight, step=step)
        since = clock()
    if weight >= 100:
        return
    if clock() < since + pause_s - 0.05:  # fired early (a lease that ran out): the rest of the pause
        raise Paused(step, weight, since + pause_s - clock())
    verdict = str(judge(shift.at(step, weight, pause_s)))
    if verdict == "inconclusive" and asked < MAX_INCONCLUSIVE:
        logger.info("canary step %s at %s%%: inconclusive, asking again", step, weight)
        if shift.fence is not None:
            intent.asked_again(shift.fence, shift.service, shift.env)  # and the next pause starts now
        raise Paused(step, weight, pause_s)
    if verdict != "pass":
        raise CanaryFailed(f"canary step {step} ({weight}% on {shift.new.version}) judged {verdict}",
                           hint="the previous version has all traffic again")
    following = steps[step] if step < len(steps) else 100
    shift.to(following, step=step + 1, verdict={"step": step, "weight": weight, "verdict": verdict})
    if following < 100:
        raise Paused(step + 1, following, pause_s)


def rolling(shift: Shift, judge: Judge) -> list[dict[str, object]]:
    """Even steps without pauses, the judge checking health between them (one container per release)."""
    return canary(shift, list(ROLLING_STEPS), judge, pause_s=0)
