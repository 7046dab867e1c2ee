"""Deploy: start a run that takes services to an environment (policy and locks are dispatch's)."""
from __future__ import annotations

from redis import Redis

from handlers.reply import Reply, ReplyKind, Who
from jobs.dispatch import dispatch_run
from orchestra.intents import Intent
from orchestra.settings import Settings


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings, repo: str | None = None) -> Reply:
    """Start the run, or queue it behind the deploy that holds a lock; a refusal (policy, a held lock
    with ``--no-wait``, unknown service) raises an OrchestraError.

    The reply's ``data["added_dependencies"]`` (name -> why) names the dependencies the run deploys
    first because they were not running in the environment; ``data["queued"]``, for a queued run, who
    holds the lock and where the run is in the queue.
    """
    started = dispatch_run(intent, redis=redis, settings=settings, repo=repo)
    data: dict[str, object] = {"added_dependencies": started.added_dependencies}
    if started.waiting:
        data["queued"] = started.waiting
    return Reply(ReplyKind.STARTED, run=started.run, data=data)
