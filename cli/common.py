"""What several commands share: the Redis connection and following a run's events."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from redis import Redis

from orchestra import redisconn
from orchestra.events import RUN_STREAM, Event, EventType, as_fields, as_text
from orchestra.settings import Settings


def connect(settings: Settings, *, role: str | None = None) -> Redis:
    """A Redis connection that answers, with credentials, to a Redis that demands them.

    Refuses a Redis that serves clients without a password (unless ORCHESTRA_DEV=1), and with ``role``
    (bot, worker, webhooks) a user that lacks that process's ACL; each error says how to fix it. With
    REDIS_SENTINELS it is a client of the master the sentinels name, which follows a failover.
    """
    return redisconn.connect(settings.redis_url, dev_mode=settings.dev_mode, role=role,
                             sentinel=settings.redis_sentinel)


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
