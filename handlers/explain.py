"""Explain: answers to questions about runs and releases, grounded in the event log."""
from __future__ import annotations

from redis import Redis

from agents.chatops.answers import answer
from handlers.reply import Reply, ReplyKind, Who
from orchestra.intents import Intent
from orchestra.settings import Settings


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """The answer; shown to everyone unless asked through a slash command (then only to the asker)."""
    return Reply(ReplyKind.ANSWER, answer(intent, redis=redis, settings=settings).text,
                 public=who.via != "command")
