"""Rollback: start a run that puts a service back on its previous (or a named) version."""
from __future__ import annotations

from redis import Redis

from handlers import deploy
from handlers.reply import Reply, Who
from orchestra.intents import Intent
from orchestra.settings import Settings


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """A rollback is a run like a deploy; dispatch gives it the rollback stage."""
    return deploy.handle(intent, who, redis=redis, settings=settings)
