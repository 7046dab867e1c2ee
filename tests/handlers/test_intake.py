"""The handlers without any channel: an understood request in, a channel-neutral reply out."""
from __future__ import annotations

import re

from redis import Redis

from handlers.intake import confirmed, handle
from handlers.reply import ReplyKind, Who
from orchestra.intents import Intent, IntentKind
from orchestra.parse import Parsed, parse
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Audit, RunStore

SHOP = str(PROJECT_ROOT / "examples" / "shop")
SERVICES = ["frontend", "backend"]
ALICE = Who("U0ALICE", place="C0DEPLOYS", via="command")


def _handle(text: str, redis: Redis, settings: Settings, repo: str = SHOP) -> tuple[ReplyKind, str]:
    reply = handle(parse(text, SERVICES), ALICE, redis=redis, settings=settings.with_(repos=(repo,)))
    return reply.kind, reply.text


def test_a_deploy_starts_one_run_that_remembers_where_it_was_asked(redis: Redis, settings: Settings) -> None:
    reply = handle(parse("/deploy backend dev", SERVICES), ALICE, redis=redis, settings=settings.with_(repos=(SHOP,)))
    assert reply.kind == ReplyKind.STARTED and reply.run is not None
    run = RunStore(redis).get(reply.run.id)
    assert (run.requested_by, run.services, run.env, run.channel) == ("U0ALICE", ["backend"], "development",
                                                                      "C0DEPLOYS")


def test_refusals_are_told_and_audited_and_start_nothing(redis: Redis, settings: Settings) -> None:
    kind, text = _handle("/deploy backend $(whoami)", redis, settings)
    assert kind == ReplyKind.REFUSED and "is not a valid git ref" in text
    assert [e["action"] for e in Audit(redis).entries()] == ["request_refused"]
    assert RunStore(redis).recent() == []


def test_a_repository_that_is_gone_is_denied_with_the_reason(redis: Redis, settings: Settings) -> None:
    kind, text = _handle("/deploy frontend dev", redis, settings, repo=str(PROJECT_ROOT / "nope"))
    assert kind == ReplyKind.DENIED and "does not exist" in text


def test_help_and_chit_chat(redis: Redis, settings: Settings) -> None:
    assert _handle("/orchestra help", redis, settings)[0] == ReplyKind.HELP
    assert _handle("great job on the deploy", redis, settings)[0] in (ReplyKind.NOT_UNDERSTOOD, ReplyKind.REFUSED)
    assert RunStore(redis).recent() == []


def test_a_guessed_action_asks_first_and_its_button_carries_a_revalidated_intent(redis: Redis,
                                                                                  settings: Settings) -> None:
    guess = Parsed(Intent(kind=IntentKind.DEPLOY, service="backend", env="development", text="ship it"),
                   needs_confirmation=True)
    reply = handle(guess, ALICE, redis=redis, settings=settings)
    assert reply.kind == ReplyKind.CONFIRM and reply.data["summary"] == "deploy backend to development"
    assert RunStore(redis).recent() == []
    again = confirmed(reply.data["payload"], "ship it")
    assert (again.intent.kind, again.intent.service, again.intent.env, again.needs_confirmation) == (
        IntentKind.DEPLOY, "backend", "development", False)


def test_several_services_start_one_run_in_deploy_order(redis: Redis, settings: Settings) -> None:
    reply = handle(parse("/deploy frontend and backend to dev", SERVICES), ALICE, redis=redis,
                   settings=settings.with_(repos=(SHOP,)))
    assert reply.kind == ReplyKind.STARTED and reply.run is not None
    assert RunStore(redis).get(reply.run.id).services == ["backend", "frontend"]  # frontend depends on backend


def test_a_typo_gets_the_closest_command_and_starts_nothing(redis: Redis, settings: Settings) -> None:
    kind, text = _handle("deplyoo frontend", redis, settings)
    assert (kind, text) == (ReplyKind.NOT_UNDERSTOOD, "`/deploy frontend`")
    assert RunStore(redis).recent() == []


def test_a_confirmation_carries_every_service(redis: Redis, settings: Settings) -> None:
    guess = Parsed(Intent(kind=IntentKind.DEPLOY, service="frontend", services=["frontend", "backend"],
                          env="staging", text="ship both"), needs_confirmation=True)
    reply = handle(guess, ALICE, redis=redis, settings=settings)
    again = confirmed(reply.data["payload"], "ship both").intent
    assert (again.service, again.services, again.env) == ("frontend", ["frontend", "backend"], "staging")


def test_every_command_the_help_shows_is_understood() -> None:
    """Each `/...` example of /orchestra help, filled in as a person would, parses to what it says."""
    from bot.slack.texts import HELP

    shown = re.findall(r"`(/[^`]+)`", HELP)
    assert len(shown) >= 8 and any(c.startswith("/orchestra flaky") for c in shown)
    for example in shown:
        filled = re.sub(r"\s*\[[^\]]*\]", "", example.replace("&lt;service | run id&gt;", "backend"))
        filled = filled.replace("&lt;service&gt;", "backend").replace("&lt;env&gt;", "production")
        parsed = parse(filled, SERVICES)
        assert parsed.intent.kind != IntentKind.UNKNOWN and parsed.problem is None, (example, filled, parsed)
