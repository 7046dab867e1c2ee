"""The relay's per-channel pacing, on a clock the test moves."""
from __future__ import annotations

from bot.slack.pacer import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_one_post_per_interval() -> None:
    clock = Clock()
    pacer = Pacer(1.0, burst=2, clock=clock)
    for _ in range(2):
        assert pacer.ready("C1")
        pacer.sent("C1")
    assert not pacer.ready("C1") and pacer.wait_s("C1") == 1.0
    clock.now += 0.5
    assert pacer.wait_s("C1") == 0.5
    clock.now += 0.5
    assert pacer.ready("C1")
    pacer.sent("C1")
    assert not pacer.ready("C1")
    assert pacer.ready("C2")  # channels are paced apart


def test_an_idle_channel_gets_its_burst_back_but_no_more() -> None:
    clock = Clock()
    pacer = Pacer(1.0, burst=2, clock=clock)
    pacer.sent("C1")
    pacer.sent("C1")
    clock.now += 60
    pacer.sent("C1")
    pacer.sent("C1")
    assert not pacer.ready("C1")


def test_a_429_holds_the_channel_whatever_the_bucket_says() -> None:
    clock = Clock()
    pacer = Pacer(1.0, burst=2, clock=clock)
    pacer.block("C1", 30)
    assert pacer.wait_s("C1") == 30
    clock.now += 30
    assert pacer.ready("C1")
