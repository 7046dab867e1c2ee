"""A deploy's intent: what it is about to do to one service's traffic, written before it does it.

Before a target starts a new release, and before every weight change (:meth:`agents.deploy.strategies.Shift.to`),
the deploy records a :class:`DeployIntent` under the service and environment (indexed by run): the new
release, the old one, the live state it started from, the phase (``starting``, ``shifting``, ``live``) and the
step and weight it is moving to. The intent is cleared only once the live state records how the deploy
ended (the group went live, or the failed deploy was undone). So a worker killed at any point leaves an
intent behind, and the reconciler (:mod:`agents.deploy.reconcile`) knows what to undo.

Every write is owner-checked in one Lua step: the run must hold the service's deploy lock with the token
it recorded, and an intent another run left is never overwritten (it is undone first). A worker that was
stalled past its lock cannot overwrite a newer run's intent.
"""
from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field
from redis import Redis

from agents.deploy.targets.state import LiveState, Release, get_live
from orchestra.errors import StageFailed
from orchestra.events import as_text
from orchestra.lock_scripts import LOCK_KEY
from orchestra.locks import Fence

INTENT_KEY = "orchestra:deploy-intent:{service}:{env}"  # JSON DeployIntent
RUN_INTENTS = "orchestra:deploy-intents:{run_id}"  # set of "service:env" the run has intents for
ALL_INTENTS = "orchestra:deploy-intents"  # set of "service:env" with an intent
TAKEN_OVER = "orchestra:deploy-taken-over:{run_id}"  # the reconciler has begun: the run's deploy writes no more
TAKEN_OVER_TTL_S = 7 * 24 * 3600
STARTING, SHIFTING, LIVE = "starting", "shifting", "live"
PHASES = (STARTING, SHIFTING, LIVE)

# KEYS: intent, lock, run index, all, taken over; ARGV: run id, token, intent JSON, member.
_WRITE = """
if redis.call('EXISTS', KEYS[5]) == 1 then return 'the reconciler has taken its deploy over' end
local raw = redis.call('GET', KEYS[2])
if not raw then return 'nobody holds the deploy lock' end
local lock = cjson.decode(raw)
if lock.run_id ~= ARGV[1] or tonumber(lock.token) ~= tonumber(ARGV[2]) then
  return 'run ' .. tostring(lock.run_id) .. ' holds the deploy lock (token ' .. tostring(lock.token) .. ')'
end
local current = redis.call('GET', KEYS[1])
if current then
  local other = cjson.decode(current).run_id
  if other ~= ARGV[1] then return 'other:' .. other end
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[4])
return 'ok'
"""
# KEYS: intent, run index, all; ARGV: run id, member. Only the run's own intent goes.
_CLEAR = """
local current = redis.call('GET', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
if current and cjson.decode(current).run_id == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 1
end
if not current then redis.call('SREM', KEYS[3], ARGV[2]) end
return 0
"""


class DeployIntent(BaseModel):
    """What a deploy of one service is doing to its traffic, recorded before it does it."""

    run_id: str
    token: int  # the run's fencing token for the service's lock when it wrote this
    service: str
    env: str
    runtime: str
    location: str | None = None
    health: str = "/health"
    strategy: str | None = None  # blue-green, canary or rolling (None: a target that wrote no starting intent)
    new: Release  # its port is 0 until the target has started it
    old: Release | None = None  # the release that keeps the rest of the traffic (None: nothing to share with)
    before: LiveState | None = None  # the live state before the deploy (None: its first release)
    state: LiveState | None = None  # the live state the deploy works from (a first release's edge)
    phase: str = STARTING
    step: int = 0
    weight: int = 0  # percent of traffic the new release has, or is about to have
    asked: int = 0  # inconclusive answers of the judge at this step (a paced canary's re-asks)
    verdicts: list[dict[str, Any]] = Field(default_factory=list)  # the canary steps judged so far
    updated_at: float = Field(default_factory=time.time)  # a paced canary's pause runs from its last write

    def describe(self) -> str:
        """Where the deploy was: ``canary step 2 (25% on v2)``, ``starting v2``, ``v2 live``."""
        if self.phase == STARTING:
            return f"while starting {self.new.version}, before any traffic moved"
        if self.phase == LIVE:
            return f"after {self.new.version} went live, before the rest of its group did"
        if self.strategy == "blue-green":
            return f"during the blue-green switch ({self.weight}% on {self.new.version})"
        return f"at {self.strategy or 'traffic'} step {self.step} ({self.weight}% on {self.new.version})"


class IntentRefused(StageFailed):
    """The run may not record an intent for this service (it does not own the lock, or another run's is there)."""


def key(service: str, env: str) -> str:
    return INTENT_KEY.format(service=service, env=env)


def get(redis: Redis, service: str, env: str) -> DeployIntent | None:
    raw = redis.get(key(service, env))
    return DeployIntent.model_validate_json(raw) if raw else None


def record(redis: Redis, intent: DeployIntent) -> DeployIntent:
    """Store ``intent`` if its run owns the service's lock with its token; else :class:`IntentRefused`."""
    intent = intent.model_copy(update={"updated_at": time.time()})
    member = f"{intent.service}:{intent.env}"
    answer = as_text(redis.eval(_WRITE, 5, key(intent.service, intent.env),
                                LOCK_KEY.format(service=intent.service, env=intent.env),
                                RUN_INTENTS.format(run_id=intent.run_id), ALL_INTENTS,
                                TAKEN_OVER.format(run_id=intent.run_id),
                                intent.run_id, intent.token, intent.model_dump_json(), member))
    if answer == "ok":
        return intent
    if answer.startswith("other:"):
        raise IntentRefused(f"an interrupted deploy of {intent.service} in {intent.env} (run {answer[6:]}) "
                            "left traffic the reconciler has not put back yet",
                            hint="wait for the reconciler (a worker that starts reconciles it), then deploy again")
    raise IntentRefused(f"run {intent.run_id} may not move {intent.service} in {intent.env}: {answer}",
                        hint="the lock expired or was handed on while this run was stalled; deploy again")


def starting(redis: Redis, fence: Fence, *, new: Release, before: LiveState | None, state: LiveState,
             runtime: str, health: str, strategy: str) -> DeployIntent:
    """Record that ``new`` is about to start for the service of ``state`` (before the target starts it)."""
    return record(redis, DeployIntent(
        run_id=fence.run_id, token=fence.tokens.get(state.service, -1), service=state.service, env=state.env,
        runtime=runtime, location=state.location, health=health, strategy=strategy, new=new,
        old=before.current if before else None, before=before, state=state, phase=STARTING))


def shifting(fence: Fence, *, service: str, env: str, runtime: str, new: Release, old: Release | None,
             step: int, weight: int, verdict: dict[str, Any] | None = None) -> DeployIntent:
    """Record the weight the deploy is about to give ``new`` (before the traffic moves), with the verdict of
    the step that let it move on, if any (one write: a check killed after it neither re-judges nor skips)."""
    redis = fence.redis
    current = get(redis, service, env)
    changes: dict[str, Any] = {"phase": SHIFTING, "step": step, "weight": weight, "new": new, "old": old,
                               "token": fence.tokens.get(service, -1)}
    if current is not None and current.run_id == fence.run_id:
        if current.step != step:
            changes["asked"] = 0
        if verdict is not None:
            changes["verdicts"] = [v for v in current.verdicts if v.get("step") != verdict.get("step")] + [verdict]
        return record(redis, current.model_copy(update=changes))
    before = get_live(redis, service, env)  # a target that wrote no starting intent
    return record(redis, DeployIntent(run_id=fence.run_id, service=service, env=env,
                                      runtime=runtime, location=before.location if before else None,
                                      before=before, state=before, **changes))


def asked_again(fence: Fence, service: str, env: str) -> None:
    """The judge could not tell at this step: counted, and the next pause runs from now."""
    current = get(fence.redis, service, env)
    if current is not None and current.run_id == fence.run_id:
        record(fence.redis, current.model_copy(update={"asked": current.asked + 1}))


def went_live(fence: Fence, service: str, env: str) -> None:
    """The new release has all the traffic and the live state says so; kept until the group concludes."""
    current = get(fence.redis, service, env)
    if current is not None and current.run_id == fence.run_id:
        record(fence.redis, current.model_copy(update={"phase": LIVE, "weight": 100,
                                                        "token": fence.tokens.get(service, -1)}))


def take_over(redis: Redis, run_id: str) -> None:
    """The reconciler begins: from now on ``run_id``'s deploy (a worker that was only paused, and wakes)
    records no intent, so it moves no traffic."""
    redis.set(TAKEN_OVER.format(run_id=run_id), "1", ex=TAKEN_OVER_TTL_S)


def clear(redis: Redis, run_id: str, service: str, env: str) -> bool:
    """Forget ``run_id``'s intent for the service (another run's is left alone); True if one was cleared."""
    member = f"{service}:{env}"
    return bool(redis.eval(_CLEAR, 3, key(service, env), RUN_INTENTS.format(run_id=run_id), ALL_INTENTS,
                           run_id, member))


def of_run(redis: Redis, run_id: str) -> list[DeployIntent]:
    """The intents ``run_id`` has left, in the order its services were deployed."""
    found = []
    for member in sorted(as_text(m) for m in redis.smembers(RUN_INTENTS.format(run_id=run_id))):
        service, _, env = member.partition(":")
        intent = get(redis, service, env)
        if intent is not None and intent.run_id == run_id:
            found.append(intent)
    return sorted(found, key=lambda i: i.new.started_at)


def everywhere(redis: Redis) -> list[DeployIntent]:
    """Every intent left, of any run."""
    found = []
    for member in sorted(as_text(m) for m in redis.smembers(ALL_INTENTS)):
        service, _, env = member.partition(":")
        intent = get(redis, service, env)
        if intent is not None:
            found.append(intent)
    return found


def conclude(redis: Redis, run_id: str) -> None:
    """The run's deploy concluded (live, or undone): forget every intent it left."""
    for intent in of_run(redis, run_id):
        clear(redis, run_id, intent.service, intent.env)
