"""History: recent runs, who asked, what they did and how they ended."""
from __future__ import annotations

from redis import Redis

from handlers import explain
from handlers.reply import Reply, Who
from orchestra.intents import Intent
from orchestra.settings import Settings


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """Answered from the event log like any other question about runs."""
    return explain.handle(intent, who, redis=redis, settings=settings)
