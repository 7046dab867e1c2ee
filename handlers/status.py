"""Status: what is running and deployed; on a pull request, that pull request's runs."""
from __future__ import annotations

from redis import Redis

from handlers import explain
from handlers.reply import Reply, ReplyKind, Who
from orchestra.intents import Intent
from orchestra.settings import Settings
from orchestra.store import Run, RunStore

PR_RUNS_SCANNED = 200
PR_RUNS_SHOWN = 10


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings) -> Reply:
    """Live state from the event log, or the runs of the pull request the question was asked on."""
    pr = intent.origin.get("pr")
    if pr is None:
        return explain.handle(intent, who, redis=redis, settings=settings)
    return Reply(ReplyKind.RUNS, runs=runs_of_pull(redis, str(intent.origin.get("repo")), int(pr)),
                 data={"pr": pr}, public=True)


def runs_of_pull(redis: Redis, repo: str, number: int) -> list[Run]:
    """The newest runs of one pull request, newest first."""
    runs = [r for r in RunStore(redis).recent(PR_RUNS_SCANNED)
            if r.origin.get("repo") == repo and r.origin.get("pr") == number]
    return runs[:PR_RUNS_SHOWN]
