"""Loops that outlive Redis errors: the router, the relays, the stage heartbeat.

``keep_going`` runs one step after another until ``stop`` is set. A step that raises is logged,
reported to :mod:`orchestra.health`, and tried again after a pause that doubles from half a second
to half a minute; a step that succeeds resets the pause. No loop dies silently: a Redis restart or
one bad entry costs a pause, never the thread.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from redis import RedisError

from orchestra import health

logger = logging.getLogger(__name__)

FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 30.0


class Backoff:
    """Pauses that double after each failure and start over after a success."""

    def __init__(self, first: float = FIRST_PAUSE_S, longest: float = LONGEST_PAUSE_S) -> None:
        self.first, self.longest = first, longest
        self.next = first

    def failed(self) -> float:
        pause, self.next = self.next, min(self.next * 2, self.longest)
        return pause

    def succeeded(self) -> None:
        self.next = self.first


def keep_going(name: str, step: Callable[[], None], stop: threading.Event, *, watched: bool = True) -> None:
    """Call ``step`` until ``stop`` is set, surviving whatever it raises.

    A ``watched`` loop is one of the process's own (its health shows in ``/healthz``); a loop that
    lives only as long as one job is not.
    """
    backoff = Backoff()
    while not stop.is_set():
        try:
            step()
        except Exception as exc:
            pause = backoff.failed()
            _report(name, exc, pause, watched=watched)
            stop.wait(pause)
        else:
            backoff.succeeded()
            if watched:
                health.beat(name)


@contextmanager
def repeating(name: str, step: Callable[[], None], every_s: float) -> Iterator[None]:
    """Call ``step`` now and then every ``every_s`` seconds in a thread of its own while the block runs
    (a heartbeat, a lease kept alive), surviving whatever it raises; stopped and joined on the way out."""
    stop = threading.Event()

    def beat() -> None:
        step()
        stop.wait(every_s)

    thread = threading.Thread(target=keep_going, args=(name, beat, stop), kwargs={"watched": False},
                              name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


async def keep_going_async(name: str, step: Callable[[], Awaitable[None]], stop: threading.Event) -> None:
    """:func:`keep_going` for a coroutine step, pausing without blocking the event loop."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            await step()
        except Exception as exc:
            pause = backoff.failed()
            _report(name, exc, pause)
            await asyncio.to_thread(stop.wait, pause)
        else:
            backoff.succeeded()
            health.beat(name)


def _report(name: str, exc: Exception, pause: float, *, watched: bool = True) -> None:
    if watched:
        health.failing(name, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, RedisError):  # expected while Redis restarts or fails over: no traceback
        logger.warning("%s: Redis error (%s: %s); trying again in %g s", name, type(exc).__name__, exc, pause)
    else:
        logger.exception("%s: step failed; trying again in %g s", name, pause)
