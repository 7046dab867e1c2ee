"""The model is asked only for what the rules do not recognise, and its answer is checked like input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from bot.localslack.client import WorkspaceClient
from handlers.understand import Understander
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import RunStore
from tests.support.fake_anthropic import FakeAnthropic, fake_anthropic
from tests.support.services import free_port, wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack

SERVICES = ["frontend", "backend"]
TOOL = "record_intent_guess"
VAGUE = "could you get the newest frontend out onto the staging boxes"


@pytest.fixture
def model(settings: Settings) -> Iterator[tuple[FakeAnthropic, Settings]]:
    with fake_anthropic(api_key="sk-test") as server:
        yield server, server.client_settings(settings)


def _understander(settings: Settings, redis: Redis) -> Understander:
    return Understander.from_settings(settings, redis=redis)


def _guess(**fields: Any) -> dict[str, Any]:
    return {"intent": "deploy", "service": "frontend", "env": "staging", "confidence": 0.9, **fields}


def test_rules_first_model_never_asked(redis: Redis, model: tuple[FakeAnthropic, Settings]) -> None:
    server, settings = model
    parsed = _understander(settings, redis).understand("/deploy frontend hotfix-v2 prod", SERVICES)
    assert parsed.contract()["service"] == "frontend" and not parsed.needs_confirmation
    assert server.requests == []


def test_an_action_from_the_model_needs_confirmation(redis: Redis, model: tuple[FakeAnthropic, Settings]) -> None:
    server, settings = model
    server.reply_tool(TOOL, _guess())
    parsed = _understander(settings, redis).understand(VAGUE, SERVICES)
    assert parsed.contract() == {"intent": "deploy", "service": "frontend", "ref": None, "env": "staging",
                                 "strategy": None}
    assert parsed.needs_confirmation
    sent = server.requests[0].body
    assert sent["tool_choice"] == {"type": "tool", "name": TOOL}
    assert VAGUE in server.last_user_text() and "frontend, backend" in sent["system"]


@pytest.mark.parametrize("guess,expected", [
    (_guess(service="inventory"), "unknown"),  # a service the config does not have
    (_guess(confidence=0.3), "unknown"),  # the model is unsure
    (_guess(intent="unknown"), "unknown"),
    ({"intent": "status", "env": "stg", "confidence": 0.8}, "status"),
])
def test_the_guess_is_validated(redis: Redis, model: tuple[FakeAnthropic, Settings], guess: dict[str, Any],
                                expected: str) -> None:
    server, settings = model
    server.reply_tool(TOOL, guess)
    parsed = _understander(settings, redis).understand(VAGUE, SERVICES)
    assert parsed.contract()["intent"] == expected
    if expected == "status":
        assert parsed.contract()["env"] == "staging" and not parsed.needs_confirmation


def test_an_invented_or_unsafe_ref_is_dropped(redis: Redis, model: tuple[FakeAnthropic, Settings]) -> None:
    server, settings = model
    server.reply_tool(TOOL, _guess(ref="v9.9.9"))
    assert _understander(settings, redis).understand(VAGUE, SERVICES).intent.ref is None
    server.reply_tool(TOOL, _guess(ref="$(reboot)"))
    assert _understander(settings, redis).understand(VAGUE + " $(reboot)", SERVICES).intent.ref is None


def test_a_negated_request_never_becomes_an_action(redis: Redis, model: tuple[FakeAnthropic, Settings]) -> None:
    server, settings = model
    server.reply_tool(TOOL, _guess())
    text = "we should probably not get frontend onto staging today"
    assert _understander(settings, redis).understand(text, SERVICES).contract()["intent"] == "unknown"


def test_model_errors_fall_back_to_the_rules(redis: Redis, model: tuple[FakeAnthropic, Settings]) -> None:
    server, settings = model
    server.fail(500, times=10)
    parsed = _understander(settings, redis).understand(VAGUE, SERVICES)
    assert parsed.contract()["intent"] == "unknown" and not parsed.understood


def test_confirming_in_slack_starts_the_run(redis: Redis, model: tuple[FakeAnthropic, Settings]) -> None:
    server, settings = model
    server.on_tool(TOOL, lambda body: _guess())
    with local_slack() as (running, control):
        bot_settings = settings.with_(slack_api_url=running.api_url, repos=(str(PROJECT_ROOT / "examples/shop"),))
        with bot_in_thread(bot_settings, control, relay=False):
            control.say(VAGUE, user="U0ALICE", channel="dm")
            ask: Any = wait_for(lambda: [m for m in control.transcript("D0ALICE") if m["buttons"]],
                                what="the confirmation")
            assert "Did you mean: *deploy frontend to staging*?" in ask[0]["text"]
            assert RunStore(redis).recent() == []
            control.click(ask[0]["ts"], "Yes, do it", user="U0ALICE", channel="D0ALICE")
            run: Any = wait_for(lambda: RunStore(redis).recent(), what="the run")
            assert (run[0].services, run[0].env, run[0].requested_by) == (["backend", "frontend"], "staging", "U0ALICE")
            wait_for(lambda: any(m["text"].startswith(":rocket:") for m in _dm(control)), what="started")


def _dm(control: WorkspaceClient) -> list[dict[str, Any]]:
    return control.transcript("D0ALICE")


def test_parse_cli_uses_the_model_and_survives_without_redis(model: tuple[FakeAnthropic, Settings]) -> None:
    server, settings = model
    server.on_tool(TOOL, lambda body: _guess())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "ORCHESTRA_"))}
    env.update(ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=server.base_url, REDIS_URL=settings.redis_url)
    cmd = [sys.executable, "-m", "cli", "parse", "--services", "frontend,backend", VAGUE]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert json.loads(out.stdout)["intent"] == "deploy" and len(server.requests) == 1
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert out.returncode == 0 and json.loads(out.stdout)["intent"] == "unknown"
