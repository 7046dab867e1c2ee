"""One apply at a time per workspace (project and environment), with the deploy locks' semantics, tried with
real concurrent attempts against a real Redis: one winner and the others told who holds it, a fresh fencing
token per holder, renewal while the owner lives, expiry when it dies, release by the owner only."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import Redis

from agents.iac import apply
from orchestra.errors import StageFailed
from orchestra.locks import Lock, Locks

NAME = apply.LOCK_NAME.format(project="shop")


def test_of_many_applies_started_at_once_one_holds_the_workspace_and_the_others_are_told_who(redis: Redis) -> None:
    start, release = threading.Barrier(8), threading.Event()

    def attempt(i: int) -> str:
        start.wait()
        try:
            with apply.workspace_lock(redis, NAME, "staging", run_id=f"r-{i}", owner=f"U{i}", wait_s=0) as lock:
                release.wait(10)
                return f"held {lock.token}"
        except StageFailed as exc:
            return str(exc)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(attempt, i) for i in range(8)]
        time.sleep(1)
        release.set()
        outcomes = [f.result() for f in futures]
    held = [o for o in outcomes if o.startswith("held")]
    assert len(held) == 1, outcomes
    winner = outcomes.index(held[0])
    refused = [o for o in outcomes if not o.startswith("held")]
    assert all(f"another apply of shop/staging is running: run r-{winner} of U{winner}" in o for o in refused)
    assert Locks(redis).holder(NAME, "staging") is None  # released by its owner on the way out
    with apply.workspace_lock(redis, NAME, "production", run_id="r-p", owner="U0", wait_s=0):
        pass  # another environment is another workspace


def test_the_lock_lives_while_its_owner_does_and_a_second_apply_waits_for_it(redis: Redis) -> None:
    seen: list[Lock | None] = []
    got: list[int] = []

    def second() -> None:
        with apply.workspace_lock(redis, NAME, "staging", run_id="r-2", owner="U2", wait_s=20,
                                  waiting=seen.append) as lock:
            got.append(lock.token)

    with apply.workspace_lock(redis, NAME, "staging", run_id="r-1", owner="U1", wait_s=0, ttl_s=0.6) as first:
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(2)  # three times the TTL: renewed all along
        holder = Locks(redis).holder(NAME, "staging")
        assert holder is not None and holder.run_id == "r-1" and not got
        assert not Locks(redis).release(NAME, "staging", run_id="r-2")  # only the owner releases
    waiter.join(timeout=10)
    assert [s.run_id for s in seen if s] == ["r-1"] and got and got[0] > first.token


def test_a_lock_whose_owner_died_expires_and_goes_to_the_next_apply_with_a_new_token(redis: Redis) -> None:
    dead = Locks(redis).acquire(NAME, "staging", owner="U1", run_id="r-killed", ttl_s=1)  # nobody renews it
    started = time.monotonic()
    with apply.workspace_lock(redis, NAME, "staging", run_id="r-next", owner="U2", wait_s=10) as lock:
        assert 0.5 < time.monotonic() - started < 5 and lock.token > dead.token
        with pytest.raises(StageFailed, match="is no longer this run's"):
            apply._check_fence(redis, NAME, "staging", dead)  # the dead owner's token no longer fences anything
        apply._check_fence(redis, NAME, "staging", lock)
