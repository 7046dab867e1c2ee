"""Deploy: start a run that takes services to an environment (policy and locks are dispatch's)."""
from __future__ import annotations

from redis import Redis

from handlers.reply import Reply, ReplyKind, Who
from jobs.dispatch import dispatch
from orchestra.intents import Intent
from orchestra.settings import Settings


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings, repo: str | None = None) -> Reply:
    """Start the run; a refusal (policy, lock, unknown service) raises an OrchestraError."""
    run = dispatch(intent, redis=redis, settings=settings, repo=repo)
    return Reply(ReplyKind.STARTED, run=run)
