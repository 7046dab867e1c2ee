"""The event bus on a real Redis: publish, consume in groups, ack, re-claim, dead-letter, replay."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import pytest
from redis import Redis

from orchestra.events import (
    DEAD_LETTER_STREAM,
    SCHEMA_VERSION,
    Consumer,
    Event,
    EventBus,
    EventType,
    dead_letters,
)
from tests.support.services import wait_for


def test_an_event_carries_run_type_time_actor_version_and_data(redis: Redis) -> None:
    bus = EventBus(redis)
    event = bus.emit("r-1", EventType.TEST_RESULTS, "test", passed=True, coverage=81.5)
    [back] = bus.replay("r-1")
    assert back.id == event.id
    assert (back.run_id, back.type, back.actor, back.v) == ("r-1", EventType.TEST_RESULTS, "test", SCHEMA_VERSION)
    assert back.data == {"passed": True, "coverage": 81.5}
    assert abs(back.ts - event.ts) < 1e-6


def test_replay_returns_one_runs_events_in_order(redis: Redis) -> None:
    bus = EventBus(redis)
    for i in range(5):
        bus.emit("r-a", EventType.PROGRESS, "agent", step=i)
        bus.emit("r-b", EventType.PROGRESS, "agent", step=i * 10)
    assert [e.data["step"] for e in bus.replay("r-a")] == [0, 1, 2, 3, 4]
    assert [e.data["step"] for e in bus.replay("r-b")] == [0, 10, 20, 30, 40]
    assert bus.replay("r-none") == []


def test_each_group_sees_every_event_and_members_share_them(redis: Redis) -> None:
    bus = EventBus(redis)
    router_a, router_b = Consumer(bus, "router", "a"), Consumer(bus, "router", "b")
    relay = Consumer(bus, "relay", "only")
    for i in range(6):
        bus.emit("r-1", EventType.PROGRESS, "agent", i=i)
    got_a = router_a.read(count=3, block_ms=10)
    got_b = router_b.read(count=10, block_ms=10)
    assert sorted(d.event.data["i"] for d in got_a + got_b) == list(range(6))
    assert len(got_a) == 3 and len(got_b) == 3
    assert [d.event.data["i"] for d in relay.read(block_ms=10)] == list(range(6))


def test_acked_events_are_not_handed_out_again(redis: Redis) -> None:
    bus = EventBus(redis)
    consumer = Consumer(bus, "router", "a", claim_idle_ms=0)
    bus.emit("r-1", EventType.PROGRESS, "agent")
    [delivery] = consumer.read(block_ms=10)
    consumer.ack(delivery)
    assert consumer.read(block_ms=10) == []


def _consume_without_ack(redis_url: str) -> None:
    consumer = Consumer(EventBus(Redis.from_url(redis_url)), "router", "doomed")
    consumer.read(block_ms=1000)
    os.kill(os.getpid(), signal.SIGKILL)  # dies before it can ack


def test_a_consumer_killed_before_ack_leaves_the_event_to_another(redis: Redis, redis_url: str) -> None:
    bus = EventBus(redis)
    bus.ensure_group("router")
    bus.emit("r-1", EventType.BUILD_READY, "build", image="shop/backend:abc")
    proc = multiprocessing.get_context("fork").Process(target=_consume_without_ack, args=(redis_url,))
    proc.start()
    proc.join(timeout=10)
    assert proc.exitcode == -signal.SIGKILL
    assert redis.xpending("orchestra:events", "router")["pending"] == 1

    survivor = Consumer(bus, "router", "survivor", claim_idle_ms=2000)
    assert survivor.read(block_ms=10) == []  # not idle long enough yet: still the dead one's
    deliveries = wait_for(lambda: survivor.read(block_ms=10), timeout=10, what="re-claim")
    assert [d.event.data["image"] for d in deliveries] == ["shop/backend:abc"]
    assert deliveries[0].deliveries == 2
    survivor.ack(deliveries[0])
    assert redis.xpending("orchestra:events", "router")["pending"] == 0


def test_an_event_that_keeps_failing_goes_to_the_dead_letter_stream(redis: Redis) -> None:
    bus = EventBus(redis)
    consumer = Consumer(bus, "router", "a", claim_idle_ms=0, max_deliveries=3)
    bus.emit("r-poison", EventType.PROGRESS, "agent", bad=True)
    handled = []

    def handler(event: Event) -> None:
        handled.append(event.run_id)
        raise ValueError("cannot handle this")

    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(handler,), kwargs={"stop": stop, "block_ms": 10})
    thread.start()
    wait_for(lambda: redis.xlen(DEAD_LETTER_STREAM) == 1, timeout=5, what="dead letter")
    stop.set()
    thread.join()
    assert handled == ["r-poison"] * 3
    [dead] = dead_letters(redis)
    assert dead["group"] == "router" and "delivered 4 times" in dead["reason"]
    assert Event.model_validate_json(dead["event"]).run_id == "r-poison"
    assert redis.xpending("orchestra:events", "router")["pending"] == 0


def test_a_malformed_event_is_refused_before_it_is_published() -> None:
    with pytest.raises(ValueError):
        Event(run_id="r-1", type="not_an_event", actor="x")  # type: ignore[arg-type]


def test_an_event_has_the_same_id_in_the_global_stream_and_its_runs(redis: Redis) -> None:
    bus = EventBus(redis)
    emitted = [bus.emit(f"r-{i % 3}", EventType.PROGRESS, "agent", step=i).id for i in range(300)]
    replayed = {e.id for run in ("r-0", "r-1", "r-2") for e in bus.replay(run)}
    assert replayed == set(emitted)  # published together: one id, whichever millisecond each XADD ran in
