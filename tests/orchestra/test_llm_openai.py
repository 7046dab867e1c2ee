"""The LLM client over OpenAI chat completions: the real openai SDK against a local server, real Redis."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel
from redis import Redis

from orchestra.errors import OrchestraError
from orchestra.events import EventBus, EventType
from orchestra.llm import LLM, LLMFailed
from orchestra.llm.budget import Budget
from orchestra.settings import Settings
from tests.support.fake_openai import FakeOpenAI, fake_openai


class Verdict(BaseModel):
    """Whether the change is safe."""

    safe: bool
    reason: str


VARS = {"files": "app.py", "diff": "+print('hi')"}
EXPLAIN = {"facts": "{}", "question": "why?", "draft": "v2 was rolled back"}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with fake_openai() as running:
        yield running


def _calls(redis: Redis, run_id: str) -> list[dict]:
    return [e.data for e in EventBus(redis).replay(run_id) if e.type is EventType.LLM_CALL]


def test_structured_output_asks_for_a_json_schema_and_validates_it(settings: Settings, server: FakeOpenAI,
                                                                   redis: Redis) -> None:
    server.on_schema("record_verdict", lambda body: {"safe": False, "reason": "drops a table"})
    verdict = LLM(server.client_settings(settings), redis=redis).structured("review_diff", VARS, Verdict,
                                                                            run_id="r1")
    assert verdict == Verdict(safe=False, reason="drops a table")
    body = server.requests[-1]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["safe", "reason"]
    assert body["messages"][0]["role"] == "system" and '"safe"' in body["messages"][0]["content"]
    assert '<untrusted-data name="diff"' in body["messages"][1]["content"]  # the diff is fenced as data
    [call] = _calls(redis, "r1")
    assert (call["protocol"], call["model"], call["outcome"], call["cost_usd"]) == ("openai", "local-model", "ok", 0)
    assert call["input_tokens"] > 0 and call["output_tokens"] > 0


def test_an_answer_that_is_not_json_gets_one_repair_turn(settings: Settings, server: FakeOpenAI,
                                                         redis: Redis) -> None:
    server.reply("Sure! The change looks safe.")
    server.reply('```json\n{"safe": true, "reason": "prints only"}\n```')
    verdict = LLM(server.client_settings(settings), redis=redis).structured("review_diff", VARS, Verdict)
    assert verdict.safe is True
    repair = server.requests[-1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "Sure! The change looks safe."}
    assert "invalid" in repair[-1]["content"] and "record_verdict" in repair[-1]["content"]


def test_output_that_stays_invalid_fails_clearly(settings: Settings, server: FakeOpenAI, redis: Redis) -> None:
    server.reply('{"safe": "maybe"}')
    server.reply('{"safe": "perhaps"}')
    with pytest.raises(LLMFailed, match="did not validate"):
        LLM(server.client_settings(settings), redis=redis).structured("review_diff", VARS, Verdict)
    assert len(server.requests) == 2


def test_a_server_that_only_takes_json_object_is_asked_that_way_from_then_on(settings: Settings,
                                                                            redis: Redis) -> None:
    with fake_openai(json_object_only=True) as server:  # llama-cpp-python's server
        server.on_schema("record_verdict", lambda body: {"safe": True, "reason": "docs only"})
        llm = LLM(server.client_settings(settings), redis=redis, max_retries=0)
        assert llm.structured("review_diff", VARS, Verdict).safe is True
        assert llm.structured("review_diff", VARS, Verdict).reason == "docs only"
    assert [r["response_format"]["type"] for r in server.requests] == ["json_schema", "json_object", "json_object"]
    assert server.requests[1]["response_format"]["schema"]["required"] == ["safe", "reason"]


def test_chat_understanding_uses_the_fast_model(settings: Settings, server: FakeOpenAI, redis: Redis) -> None:
    llm = LLM(server.client_settings(settings).with_(llm_model_fast="small-model"), redis=redis)
    llm.text("explain_run", EXPLAIN, run_id="r2")
    llm.text("explain_run", EXPLAIN, run_id="r2", fast=True)
    assert [r["model"] for r in server.requests] == ["local-model", "small-model"]


def test_errors_after_retries_are_recorded(settings: Settings, server: FakeOpenAI, redis: Redis) -> None:
    server.fail(500, times=5)
    with pytest.raises(LLMFailed, match="InternalServerError"):
        LLM(server.client_settings(settings), redis=redis, max_retries=1).text(
            "explain_run", EXPLAIN, run_id="r3")
    assert [c["outcome"] for c in _calls(redis, "r3")] == ["error"]


def test_a_server_that_wants_a_key_gets_it(settings: Settings, redis: Redis) -> None:
    with fake_openai(api_key="sk-local-123") as server:
        llm = LLM(server.client_settings(settings), redis=redis, max_retries=0)
        assert llm.text("explain_run", EXPLAIN).startswith("echo:")
        wrong = LLM(server.client_settings(settings).with_(llm_api_key="sk-wrong"), redis=redis, max_retries=0)
        with pytest.raises(LLMFailed, match="AuthenticationError"):
            wrong.text("explain_run", EXPLAIN)


def test_local_models_still_count_against_token_budgets(settings: Settings, server: FakeOpenAI,
                                                        redis: Redis) -> None:
    llm = LLM(server.client_settings(settings).with_(llm_price=(1.0, 2.0)), redis=redis)
    llm.text("explain_run", EXPLAIN, run_id="r4")
    used = Budget(redis, llm.budget.limits).used("r4")
    assert used["run_tokens"] > 0 and used["run_usd"] > 0


@pytest.mark.parametrize("env, expected", [
    ({}, ("anthropic", None, None, "claude-sonnet-4-6", None, None)),
    ({"ANTHROPIC_API_KEY": "sk-ant-1"}, ("anthropic", None, "sk-ant-1", "claude-sonnet-4-6", None, None)),
    ({"ORCHESTRA_LLM_URL": "http://127.0.0.1:11434", "ORCHESTRA_LLM_MODEL": "llama3.1:8b"},
     ("anthropic", "http://127.0.0.1:11434", None, "llama3.1:8b", None, (0.0, 0.0))),
    ({"ORCHESTRA_LLM_PROTOCOL": "openai", "ORCHESTRA_LLM_URL": "http://127.0.0.1:8000/v1",
      "ORCHESTRA_LLM_MODEL": "qwen", "ORCHESTRA_LLM_MODEL_FAST": "smollm2", "ORCHESTRA_LLM_PRICE": "0.2,0.6"},
     ("openai", "http://127.0.0.1:8000/v1", None, "qwen", "smollm2", (0.2, 0.6))),
    ({"ORCHESTRA_LLM_PROTOCOL": "openai", "OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-ant-1"},
     ("openai", None, "sk-1", "claude-sonnet-4-6", None, None)),
])
def test_settings_from_the_environment(env: dict[str, str], expected: tuple) -> None:
    s = Settings.from_env(env)
    assert (s.llm_protocol, s.llm_url, s.llm_api_key, s.llm_model, s.llm_model_fast, s.llm_price) == expected
    assert s.llm_configured == bool(s.llm_url or s.llm_api_key)


@pytest.mark.parametrize("env, message", [
    ({"ORCHESTRA_LLM_PROTOCOL": "grpc"}, "ORCHESTRA_LLM_PROTOCOL='grpc' is not a protocol"),
    ({"ORCHESTRA_LLM_PRICE": "cheap"}, "ORCHESTRA_LLM_PRICE='cheap' is not a price"),
])
def test_bad_settings_are_refused_with_what_to_write(env: dict[str, str], message: str) -> None:
    with pytest.raises(OrchestraError, match=message):
        Settings.from_env(env)
