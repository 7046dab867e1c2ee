"""Per-channel pacing: about one post per second per channel, and Retry-After honoured."""
from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Remembers, per channel, when the next post may go out."""

    def __init__(self, interval_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._next: dict[str, float] = {}

    def ready(self, channel: str) -> bool:
        return self.clock() >= self._next.get(channel, 0.0)

    def wait_s(self, channel: str) -> float:
        return max(0.0, self._next.get(channel, 0.0) - self.clock())

    def sent(self, channel: str) -> None:
        self._next[channel] = max(self._next.get(channel, 0.0), self.clock() + self.interval_s)

    def block(self, channel: str, seconds: float) -> None:
        """Hold the channel for ``seconds`` (a 429's Retry-After, or a back-off after an error)."""
        self._next[channel] = max(self._next.get(channel, 0.0), self.clock() + seconds)
