"""The product's AI paths through a real open-source model on loopback (SmolLM2-135M, llama.cpp).

The model is tiny: these tests prove the plumbing (the openai SDK, response_format with a JSON
schema, budgets and provenance events against a real server) and the safety of each path (what the
model says is validated, and never acts on its own), not the model's judgement. Whatever it answers,
each path must end in something safe: a confirmation or "not understood", a Dockerfile that passes the
checks, an explanation that contains the facts.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from agents.build.detect import detect_stack
from agents.build.dockerfile import Images, generate, lint
from agents.build.refine import check_proposal, refine
from agents.chatops.answers import answer
from agents.findings import Severity
from bot.localslack.client import WorkspaceClient
from orchestra.events import EventBus, EventType
from orchestra.intents import Intent, IntentKind
from orchestra.llm import LLM, NO_RUN
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import RunStore
from tests.agents.chatops.test_answers import ROLLBACK, _deploy
from tests.support.local_model import LocalModel, local_model_server
from tests.support.sample_apps import flask_app
from tests.support.services import wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack

pytestmark = pytest.mark.slow
SHOP = PROJECT_ROOT / "examples" / "shop"
VAGUE = "<@U0ORCHESTRA> could the frontend thing go out to the staging boxes pls"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModel]:
    with local_model_server(tmp_path_factory.mktemp("model") / "server.log") as running:
        yield running


def _calls(redis: Redis, run_id: str = NO_RUN) -> list[dict]:
    return [e.data for e in EventBus(redis).replay(run_id) if e.type is EventType.LLM_CALL]


def _answered(control: WorkspaceClient, user: str) -> list[dict]:
    everything = [x for m in control.transcript("devops-orchestra") for x in (m, *m["replies"])]
    return [m for m in everything if m["ephemeral_to"] in (user, None)]


def test_free_text_goes_through_the_model_and_never_acts_on_its_own(model: LocalModel, settings: Settings,
                                                                      redis: Redis) -> None:
    with local_slack() as (running, control):
        bot = model.client_settings(settings).with_(slack_api_url=running.api_url, repos=(str(SHOP),))
        with bot_in_thread(bot, control):
            control.say(VAGUE, user="U0ALICE")
            [reply] = wait_for(lambda: _answered(control, "U0ALICE")[1:], timeout=120, what="the bot's answer")
    [call] = _calls(redis)
    assert (call["protocol"], call["model"], call["prompt"], call["outcome"]) == (
        "openai", "smollm2", "parse_intent", "ok")
    assert call["input_tokens"] > 0 and call["output_tokens"] > 0
    if reply["text"].startswith("Did you mean"):  # the model proposed an action: it waits for a click
        assert [b["type"] for b in reply["blocks"]][-1] == "actions"
    else:
        assert reply["text"] == "Sorry, I didn't understand that. Try `/orchestra help`."
    assert RunStore(redis).recent() == []


def test_a_dockerfile_refinement_is_kept_only_if_it_passes_the_checks(model: LocalModel, settings: Settings,
                                                                      redis: Redis, tmp_path: Path) -> None:
    path = flask_app(tmp_path / "web")
    template = generate(detect_stack(path), path, service="web", port=5000, health="/health",
                        images=Images(python="orchestra-base:bookworm"))
    llm = LLM(model.client_settings(settings), redis=redis, timeout_s=300)
    result = refine(template, service="web", stack="python-flask", service_dir=path, llm=llm, run_id="r-model")
    assert [c["outcome"] for c in _calls(redis, "r-model")] in (["ok"], ["ok", "ok"])
    if result.source == "llm":
        assert check_proposal(template, result.text) == []
    else:
        assert result.text == template and result.note.startswith(("template used", "template kept"))
    assert not [f for f in lint(result.text) if f.severity is Severity.ERROR]


def test_an_explanation_keeps_the_grounded_facts(model: LocalModel, settings: Settings, redis: Redis) -> None:
    run = _deploy(redis, service="payments", env="production", version="v2.1.0", user="carol",
                  approver="dave", rollback=ROLLBACK)
    intent = Intent(kind=IntentKind.EXPLAIN, env="production", text="why did prod roll back?")
    result = answer(intent, redis=redis, settings=model.client_settings(settings))
    assert [c["outcome"] for c in _calls(redis, run.id)] == ["ok"]
    for fact in (run.id, "error_rate", "6.12%", "2.00%", "v2.1.0"):
        assert fact in result.text, (fact, result.source)
