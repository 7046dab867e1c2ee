"""Per-channel pacing: about one post per second per channel, a short burst allowed, Retry-After honoured.

A token bucket per channel: ``burst`` posts may go at once (a new thread's parent and its first
reply need not wait a second apart), then one more every ``interval_s``. Slack's limit for
``chat.postMessage`` is about one message per second per channel over time, with short bursts
tolerated; a 429 still blocks the channel for its Retry-After.
"""
from __future__ import annotations

import time
from collections.abc import Callable

BURST = 2


class Pacer:
    """Remembers, per channel, how many posts may go now and until when a 429 holds it."""

    def __init__(self, interval_s: float = 1.0, *, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.burst = burst
        self.clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}  # channel -> (tokens, when counted)
        self._held: dict[str, float] = {}  # channel -> held until

    def ready(self, channel: str) -> bool:
        return self.wait_s(channel) == 0.0

    def wait_s(self, channel: str) -> float:
        now = self.clock()
        held = self._held.get(channel, 0.0) - now
        short = 1.0 - self._available(channel, now)
        return max(0.0, held, short * self.interval_s if short > 0 else 0.0)

    def sent(self, channel: str) -> None:
        now = self.clock()
        self._tokens[channel] = (self._available(channel, now) - 1.0, now)

    def block(self, channel: str, seconds: float) -> None:
        """Hold the channel for ``seconds`` (a 429's Retry-After, or a back-off after an error)."""
        self._held[channel] = max(self._held.get(channel, 0.0), self.clock() + seconds)

    def _available(self, channel: str, now: float) -> float:
        tokens, counted = self._tokens.get(channel, (float(self.burst), now))
        refill = (now - counted) / self.interval_s if self.interval_s > 0 else float(self.burst)
        return min(float(self.burst), tokens + refill)
