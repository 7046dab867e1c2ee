"""What several commands share: the Redis connection and following a run's events."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestra import health, redisconn
from orchestra.errors import OrchestraError
from orchestra.events import RUN_STREAM, Event, EventType, as_fields, as_text
from orchestra.settings import Settings

logger = logging.getLogger(__name__)


def connect(settings: Settings, *, role: str | None = None) -> Redis:
    """A Redis connection that answers, with credentials, to a Redis that demands them.

    Refuses a Redis that serves clients without a password (unless ORCHESTRA_DEV=1), and with ``role``
    (bot, worker, webhooks) a user that lacks that process's ACL; each error says how to fix it. With
    REDIS_SENTINELS it is a client of the master the sentinels name, which follows a failover.
    """
    return redisconn.connect(settings.redis_url, dev_mode=settings.dev_mode, role=role,
                             sentinel=settings.redis_sentinel)


def connect_waiting(settings: Settings, *, role: str) -> Redis:
    """:func:`connect` for a long-running process: while Redis (or every sentinel) does not answer, wait and
    try again, up to ``settings.give_up_s``; then exit with :data:`orchestra.health.EXIT_GAVE_UP`, so that a
    supervisor restarting the process keeps waiting instead of counting quick failures. Anything else
    (credentials, ACL, an open Redis) is refused at once."""
    deadline, pause = time.monotonic() + settings.give_up_s, 0.5
    while True:
        try:
            return connect(settings, role=role)
        except OrchestraError as exc:
            if not _unreachable(exc):
                raise
            if time.monotonic() + pause > deadline:
                logger.error("giving up: %s for %g s (ORCHESTRA_GIVE_UP_S); exiting with code %s so that the "
                             "supervisor tries again", exc, settings.give_up_s, health.EXIT_GAVE_UP)
                raise SystemExit(health.EXIT_GAVE_UP) from exc
            logger.warning("%s; trying again in %g s", exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)


def _unreachable(exc: OrchestraError) -> bool:
    cause = exc.__cause__
    if cause is None:  # the sentinels' own check says none answers
        return str(exc).startswith("none of the sentinels")
    return isinstance(cause, (RedisConnectionError, RedisTimeoutError)) and not isinstance(cause, AuthenticationError)


def run_events(redis: Redis, run_id: str, *, follow: bool, block_ms: int = 1000,
               keep_going: Callable[[], bool] = lambda: True) -> Iterator[Event]:
    """A run's events from the first; with ``follow`` until its ``run_finished``."""
    stream, last = RUN_STREAM.format(run_id=run_id), "0"
    while keep_going():
        batch: Any = redis.xread({stream: last}, block=block_ms if follow else None, count=200)
        if not batch and not follow:
            return
        for _, entries in batch or []:
            for entry_id, fields in entries:
                last = as_text(entry_id)
                event = Event.from_entry(last, as_fields(fields))
                yield event
                if event.type == EventType.RUN_FINISHED:
                    return
