"""Help: what the bot understands (each channel words its own list)."""
from __future__ import annotations

from redis import Redis

from handlers.reply import Reply, ReplyKind, Who
from orchestra.intents import Intent
from orchestra.settings import Settings


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    return Reply(ReplyKind.HELP)
