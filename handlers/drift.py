"""``/orchestra drift <env>``: has the environment's infrastructure changed outside Terraform?

Starts a run of kind ``drift`` (its one stage, :mod:`agents.iac.drift`, runs on a worker: a refresh-only
Terraform plan takes seconds and needs the worker's AWS credentials), whose thread gets the answer: the
resources changed outside Terraform, "no drift", or "no state yet". It changes nothing, so it takes no deploy
lock (dispatch's read-only kinds).
"""
from __future__ import annotations

from redis import Redis

from handlers.reply import Reply, ReplyKind, Who
from jobs.dispatch import dispatch
from orchestra.errors import OrchestraError
from orchestra.intents import ENVIRONMENTS, Intent
from orchestra.settings import Settings

USAGE = "say which environment to look at, e.g. `/orchestra drift staging` (one of {envs})"
NOT_AN_ENV = "`{word}` is not an environment; " + USAGE


def handle(intent: Intent, who: Who, *, redis: Redis, settings: Settings, repo: str | None = None) -> Reply:
    """Start the drift check of ``intent.env``; without exactly an environment, say how to ask."""
    envs = ", ".join(ENVIRONMENTS)
    stray = intent.service or intent.ref or intent.strategy
    if stray:
        raise OrchestraError(NOT_AN_ENV.format(word=stray[:40], envs=envs))
    if intent.env is None:
        raise OrchestraError(USAGE.format(envs=envs))
    run = dispatch(intent, redis=redis, settings=settings, repo=repo)
    return Reply(ReplyKind.STARTED, run=run, public=True)
