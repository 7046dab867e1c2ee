"""Runs, locks, audit and idempotency keys on a real Redis."""
from __future__ import annotations

import threading

import pytest
from redis import Redis

from orchestra.errors import LockHeld, NotFound
from orchestra.locks import Locks
from orchestra.store import Audit, Run, RunStatus, RunStore, claim_once
from tests.support.services import wait_for


def _run(**fields: object) -> Run:
    return Run(requested_by="U0ALICE", repo="/repo", services=["backend"], env="staging", **fields)


def test_a_run_is_recorded_and_read_back(redis: Redis) -> None:
    store = RunStore(redis)
    run = store.create(_run(ref="hotfix-v2", source="slack"))
    back = store.get(run.id)
    assert back == run
    assert [r.id for r in store.active()] == [run.id]


def test_finishing_a_run_stamps_it_and_drops_it_from_the_active_set(redis: Redis) -> None:
    store = RunStore(redis)
    run = store.create(_run())
    done = store.update(run.id, status=RunStatus.SUCCEEDED, reason="all stages passed")
    assert done is not None and done.finished_at is not None
    assert store.active() == []
    assert store.recent()[0].status == RunStatus.SUCCEEDED


def test_update_with_a_failed_expectation_changes_nothing(redis: Redis) -> None:
    store = RunStore(redis)
    run = store.create(_run(stage="analyze"))
    assert store.update(run.id, expect=lambda r: r.stage == "test", stage="build") is None
    assert store.get(run.id).stage == "analyze"


def test_concurrent_compare_and_set_lets_exactly_one_win(redis: Redis) -> None:
    store = RunStore(redis)
    run = store.create(_run(stage="analyze"))
    wins = []

    def advance() -> None:
        if store.update(run.id, expect=lambda r: r.stage == "analyze", stage="test"):
            wins.append(1)

    threads = [threading.Thread(target=advance) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_an_unknown_run_is_a_clear_error(redis: Redis) -> None:
    with pytest.raises(NotFound, match="no run 'r-missing'"):
        RunStore(redis).get("r-missing")


def test_the_lock_names_its_holder_and_only_the_holder_releases_it(redis: Redis) -> None:
    locks = Locks(redis)
    locks.acquire("backend", "production", owner="U0ALICE", run_id="r-1")
    with pytest.raises(LockHeld) as held:
        locks.acquire("backend", "production", owner="U0BOB", run_id="r-2")
    assert "U0ALICE" in str(held.value) and "r-1" in str(held.value)
    assert locks.acquire("backend", "production", owner="U0ALICE", run_id="r-1").run_id == "r-1"
    assert locks.release("backend", "production", run_id="r-2") is False
    assert locks.release("backend", "production", run_id="r-1") is True
    assert locks.acquire("backend", "production", owner="U0BOB", run_id="r-2").owner == "U0BOB"
    locks.acquire("backend", "staging", owner="U0CAROL", run_id="r-3")  # other environment: free


def test_a_lock_expires(redis: Redis) -> None:
    locks = Locks(redis)
    locks.acquire("frontend", "staging", owner="U0ALICE", run_id="r-1", ttl_s=0.05)
    wait_for(lambda: locks.holder("frontend", "staging") is None, timeout=2, what="lock expiry")
    assert locks.acquire("frontend", "staging", owner="U0BOB", run_id="r-2").owner == "U0BOB"


def test_the_audit_trail_keeps_every_entry_in_order(redis: Redis) -> None:
    audit = Audit(redis)
    audit.record("run_requested", actor="U0ALICE", run_id="r-1", intent={"intent": "deploy"})
    audit.record("approval_approved", actor="U0BOB", run_id="r-1", stage="deploy")
    rows = audit.entries()
    assert [(r["action"], r["actor"]) for r in rows] == [("run_requested", "U0ALICE"), ("approval_approved", "U0BOB")]
    assert rows[0]["detail"] == {"intent": {"intent": "deploy"}}


def test_claim_once_is_true_only_the_first_time(redis: Redis) -> None:
    assert claim_once(redis, "slack:Ev123") is True
    assert claim_once(redis, "slack:Ev123") is False
    assert claim_once(redis, "slack:Ev124") is True
