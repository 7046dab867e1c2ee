"""The local workspace speaks Slack's protocols to the real slack-sdk and slack-bolt clients."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.localslack import Running
from bot.localslack.client import WorkspaceClient
from orchestra.errors import OrchestraError
from tests.support.slack_workspace import local_slack


@pytest.fixture
def slack() -> Iterator[tuple[Running, WorkspaceClient]]:
    # Roomy: the first envelope also waits for Bolt's auth.test, and each ack crosses two event loops.
    with local_slack(ack_timeout=5.0) as pair:
        yield pair


@pytest.fixture
def nobody_acks() -> Iterator[tuple[Running, WorkspaceClient]]:
    """A workspace that gives up on an ack quickly: for the test where none ever comes."""
    with local_slack(ack_timeout=1.0) as pair:
        yield pair


def test_web_api_posts_updates_and_threads(slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    client = WebClient(token="xoxb-local", base_url=running.api_url)
    assert client.auth_test()["user_id"] == "U0ORCHESTRA"
    parent = client.chat_postMessage(channel="#devops-orchestra", text="deploying")
    client.chat_postMessage(channel=parent["channel"], thread_ts=parent["ts"], text="built")
    client.chat_update(channel=parent["channel"], ts=parent["ts"], text="deployed",
                       blocks=[{"type": "actions", "elements": [
                           {"type": "button", "action_id": "approve", "text": {"type": "plain_text",
                                                                               "text": "Approve"}}]}])
    client.chat_postEphemeral(channel="C0DEPLOYS", user="U0BOB", text="just for bob")
    messages = control.transcript("devops-orchestra")
    assert [m["text"] for m in messages] == ["deployed", "just for bob"]
    assert messages[0]["edits"] == 1 and messages[0]["buttons"][0]["text"] == "Approve"
    assert [r["text"] for r in messages[0]["replies"]] == ["built"]
    assert messages[1]["ephemeral_to"] == "U0BOB"
    assert client.users_info(user="U0BOB")["user"]["name"] == "bob"


def test_bad_token_and_unknown_channel_are_slack_errors(slack: tuple[Running, WorkspaceClient]) -> None:
    running, _ = slack
    with pytest.raises(SlackApiError) as bad:
        WebClient(token="xoxb-wrong", base_url=running.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        WebClient(token="xoxb-local", base_url=running.api_url).chat_postMessage(channel="#nope", text="x")
    assert missing.value.response["error"] == "channel_not_found"


def test_injected_429_carries_retry_after(slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    client = WebClient(token="xoxb-local", base_url=running.api_url)
    control.fail_next("chat.postMessage", status=429, error="ratelimited", retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="C0DEPLOYS", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert client.chat_postMessage(channel="C0DEPLOYS", text="x")["ok"]


def test_per_channel_rate_limit(slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    control.rate_limit(per_sec=0.1, burst=2)  # a token takes 10 s to come back: none does before the 3rd post
    client = WebClient(token="xoxb-local", base_url=running.api_url)
    client.chat_postMessage(channel="C0DEPLOYS", text="1")
    client.chat_postMessage(channel="C0DEPLOYS", text="2")
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="C0DEPLOYS", text="3")
    assert int(limited.value.response.headers["Retry-After"]) >= 1
    assert client.chat_postMessage(channel="U0BOB", text="other channel")["ok"]


def test_control_api_explains_bad_input(slack: tuple[Running, WorkspaceClient]) -> None:
    _, control = slack
    with pytest.raises(OrchestraError, match="unknown user 'U0NOBODY'"):
        control.command("/deploy x", user="U0NOBODY")
    with pytest.raises(OrchestraError, match="must start with '/'"):
        control.command("deploy x")


def test_socket_mode_envelopes_acks_retries_and_response_url(slack: tuple[Running, WorkspaceClient]) -> None:
    running, control = slack
    seen: list[str] = []

    async def scenario() -> dict[str, object]:
        app = AsyncApp(client=AsyncWebClient(token="xoxb-local", base_url=running.api_url))

        @app.command("/deploy")
        async def deploy(ack, command, respond):  # type: ignore[no-untyped-def]
            await ack()
            seen.append(command["text"])
            await respond(text=f"deploying {command['text']}")

        @app.event("app_mention")
        async def mention(body, say):  # type: ignore[no-untyped-def]
            seen.append(body["event_id"])
            await say(text="hello", thread_ts=body["event"]["ts"])

        handler = AsyncSocketModeHandler(app, app_token="xapp-local")
        await handler.connect_async()
        try:
            command = await asyncio.to_thread(control.command, "/deploy frontend main", user="bob")
            mention = await asyncio.to_thread(control.say, "<@U0ORCHESTRA> hi", duplicates=2)
            return {"command": command, "mention": mention}
        finally:
            await handler.close_async()

    results = asyncio.run(scenario())
    command, mention = results["command"], results["mention"]
    # Acked within Slack's 3 s deadline (the first envelope also pays for Bolt's auth.test).
    assert command["acked"] is True and command["ack_ms"] < 3000  # type: ignore[index]
    assert mention["attempts"] == 3  # type: ignore[index]
    assert seen[0] == "frontend main" and seen[1:] == [mention["event_id"]] * 3  # type: ignore[index]
    messages = control.transcript()
    reply = next(m for m in messages if m["text"] == "deploying frontend main")
    assert reply["ephemeral_to"] == "U0BOB"


def test_unacked_slash_command_times_out_like_slack(nobody_acks: tuple[Running, WorkspaceClient]) -> None:
    _, control = nobody_acks
    result = control.command("/deploy frontend")  # no app connected
    assert result["acked"] is False
    assert "operation_timeout" in control.transcript()[-1]["text"]
