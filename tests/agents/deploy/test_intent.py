"""The deploy's intent: recorded before traffic moves, and only by the run that owns the service's lock."""
from __future__ import annotations

import pytest
from redis import Redis

from agents.deploy import intent
from agents.deploy.strategies import Shift
from agents.deploy.targets.state import LiveState, Release
from orchestra.errors import StageFailed
from orchestra.locks import Fence, Locks
from orchestra.store import Run, RunStore
from tests.support.services import wait_for


def _release(version: str, run_id: str) -> Release:
    return Release(version=version, image=f"api:{version}", port=0, container=f"orchestra-api-staging-{version}",
                   run_id=run_id)


def _starting(redis: Redis, fence: Fence, version: str) -> intent.DeployIntent:
    state = LiveState(service="api", env="staging", edge_port=8080, edge_prefix="/tmp/edge")
    return intent.starting(redis, fence, new=_release(version, fence.run_id), before=None, state=state,
                           runtime="docker", health="/health", strategy="canary")


def _admitted(redis: Redis, user: str, ttl_s: float) -> Fence:
    run = Run(requested_by=user, repo="/r", services=["api"], env="staging")
    admission = Locks(redis).admit(run, ttl_s=ttl_s)
    assert admission.outcome == "admitted"
    return Fence(redis, run.id, "staging", admission.fence)


def test_a_stalled_run_cannot_overwrite_or_clear_a_newer_runs_intent(redis: Redis) -> None:
    stalled = _admitted(redis, "U0ALICE", ttl_s=0.3)
    _starting(redis, stalled, "v2")
    wait_for(lambda: Locks(redis).holder("api", "staging") is None, timeout=5, what="the stalled run's lock to expire")
    with pytest.raises(intent.IntentRefused, match="nobody holds the deploy lock"):
        _starting(redis, stalled, "v2")
    newer = _admitted(redis, "U0BOB", ttl_s=60)
    with pytest.raises(intent.IntentRefused, match=f"interrupted deploy of api in staging \\(run {stalled.run_id}\\)"):
        _starting(redis, newer, "v3")  # the stalled run's intent is not overwritten: it is put back first
    assert intent.clear(redis, stalled.run_id, "api", "staging")  # (what putting it back ends with)
    _starting(redis, newer, "v3")
    with pytest.raises(intent.IntentRefused, match=f"run {newer.run_id} holds the deploy lock"):
        _starting(redis, stalled, "v2")  # its worker woke up: refused, by its token
    forged = Fence(redis, newer.run_id, "staging", {"api": newer.tokens["api"] - 1})
    with pytest.raises(intent.IntentRefused, match="holds the deploy lock"):
        _starting(redis, forged, "v2")  # the right run id with an old token
    assert not intent.clear(redis, stalled.run_id, "api", "staging")
    left = intent.get(redis, "api", "staging")
    assert left is not None and (left.run_id, left.new.version) == (newer.run_id, "v3")
    assert [i.run_id for i in intent.of_run(redis, newer.run_id)] == [newer.run_id]
    assert intent.of_run(redis, stalled.run_id) == []
    intent.conclude(redis, newer.run_id)
    assert intent.get(redis, "api", "staging") is None and intent.everywhere(redis) == []


class Spy:
    """A traffic split that notes what the intent said when it was asked to move traffic."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.seen: list[tuple[str, int, int]] = []

    def split(self, new: Release, old: Release | None, weight: int) -> dict[str, int]:
        left = intent.get(self.redis, "api", "staging")
        assert left is not None
        self.seen.append((left.phase, left.step, left.weight))
        return {new.version: weight}


def test_every_weight_change_is_recorded_before_the_traffic_moves(redis: Redis) -> None:
    fence = _admitted(redis, "U0ALICE", ttl_s=60)
    _starting(redis, fence, "v2")
    spy = Spy(redis)
    shift = Shift(spy, _release("v2", fence.run_id), _release("v1", "r-before"), lambda step, split: None,
                  service="api", env="staging", fence=fence)
    for step, weight in enumerate((10, 50, 100), start=1):
        shift.to(weight, step=step)
    assert spy.seen == [("shifting", 1, 10), ("shifting", 2, 50), ("shifting", 3, 100)]
    left = intent.get(redis, "api", "staging")
    assert left is not None and left.old is not None and left.old.version == "v1" and left.strategy == "canary"
    Locks(redis).hand_on(RunStore(redis).get(fence.run_id), why="done")
    with pytest.raises(StageFailed, match="no longer holds the deploy lock"):
        shift.to(100, step=3)  # a run without its lock moves nothing
    assert len(spy.seen) == 3


def test_once_the_reconciler_took_over_a_paused_worker_that_wakes_moves_nothing(redis: Redis) -> None:
    fence = _admitted(redis, "U0ALICE", ttl_s=60)
    _starting(redis, fence, "v2")
    spy = Spy(redis)
    shift = Shift(spy, _release("v2", fence.run_id), _release("v1", "r-before"), lambda step, split: None,
                  service="api", env="staging", fence=fence)
    shift.to(10, step=1)
    intent.take_over(redis, fence.run_id)  # what the reconcile job does first, while the run still holds its lock
    with pytest.raises(intent.IntentRefused, match="the reconciler has taken its deploy over"):
        shift.to(50, step=2)
    assert spy.seen == [("shifting", 1, 10)]
