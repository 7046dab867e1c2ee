"""`/orchestra drift <env>` without a channel: what it refuses (saying how to ask) before anything starts."""
from __future__ import annotations

import pytest
from redis import Redis

from handlers.intake import handle
from handlers.reply import ReplyKind, Who
from orchestra.parse import parse
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, RunStore

SHOP = str(PROJECT_ROOT / "examples" / "shop")
ALICE = Who("U0ALICE", place="C0INFRA", via="command")


@pytest.mark.parametrize(("text", "said"), [
    ("/orchestra drift", "say which environment to look at, e.g. `/orchestra drift staging` (one of production, "
                         "staging, development)"),
    ("/orchestra drift stagin", "say which environment to look at"),  # not an environment: no guess
    ("/orchestra drift backend staging", "`backend` is not an environment; say which environment to look at"),
    ("/orchestra drift staging; rm -rf /", "is not an environment"),
])
def test_drift_without_exactly_an_environment_is_refused_and_starts_nothing(
        text: str, said: str, redis: Redis, settings: Settings) -> None:
    reply = handle(parse(text, ["frontend", "backend"]), ALICE, redis=redis, settings=settings.with_(repos=(SHOP,)))
    assert reply.kind == ReplyKind.DENIED and said in reply.text, reply.text
    assert RunStore(redis).recent() == []
    assert [e["action"] for e in Audit(redis).entries()] == ["request_refused"]


def test_slacks_started_line_says_what_a_drift_run_does(redis: Redis, settings: Settings) -> None:
    from bot.slack.texts import render

    reply = handle(parse("/orchestra drift prod", ["frontend", "backend"]), ALICE, redis=redis,
                   settings=settings.with_(repos=(SHOP,)))
    assert reply.kind == ReplyKind.STARTED and reply.run is not None and reply.run.env == "production"
    assert render(reply) == (f":mag: Run `{reply.run.id}` started: looking for drift in *production* (a plan "
                             "against its live infrastructure; nothing is applied). The answer comes in the thread.")
