"""A local server that speaks the Anthropic Messages API, for the real SDK (via ``base_url``).

    with fake_anthropic(api_key="sk-test") as server:
        server.on_tool("record_intent_guess", lambda request: {"intent": "deploy", ...})
        server.fail(429, times=2)                 # the next two requests get a 429
        settings = server.client_settings(settings)  # the key and base_url of this server

In a test module, ``server = fake_anthropic_fixture(api_key=KEY)`` is a ``server`` fixture (one per test).

Replies, in order of preference: queued failures, queued replies (``reply_text`` /
``reply_tool``), a handler registered for the forced tool (``on_tool``), a text handler
(``on_text``), else an echo of the prompt's first line. Usage tokens are counted from the
request and reply sizes (about 4 characters per token) unless a reply sets them.
Every request (JSON body and headers) is kept in ``server.requests``.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from tests.support.services import free_port, port_open, wait_for

if TYPE_CHECKING:
    from orchestra.settings import Settings

DEFAULT_KEY = "sk-ant-test-key"

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
Handler = Callable[[dict[str, Any]], Any]


@dataclass
class Recorded:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class FakeAnthropic:
    api_key: str
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _failures: deque[tuple[int, str]] = field(default_factory=deque)
    _replies: deque[list[dict[str, Any]]] = field(default_factory=deque)
    _tools: dict[str, Handler] = field(default_factory=dict)
    _text: Handler | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_settings(self, settings: Settings) -> Settings:
        """``settings`` with this server's key and base URL: an LLM built on them talks to the fake."""
        return settings.with_(llm_protocol="anthropic", llm_api_key=self.api_key, llm_url=self.base_url)

    def fail(self, status: int, *, times: int = 1, retry_after_ms: str = "5") -> None:
        """The next ``times`` requests get an HTTP ``status`` error."""
        self._failures.extend([(status, retry_after_ms)] * times)

    def reply_text(self, text: str) -> None:
        self._replies.append([{"type": "text", "text": text}])

    def reply_tool(self, name: str, payload: dict[str, Any]) -> None:
        self._replies.append([{"type": "tool_use", "id": "toolu_x", "name": name, "input": payload}])

    def on_tool(self, name: str, handler: Handler) -> None:
        self._tools[name] = handler

    def on_text(self, handler: Handler) -> None:
        self._text = handler

    def last_user_text(self) -> str:
        content = self.requests[-1].body["messages"][-1]["content"]
        return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(Recorded(body, dict(request.headers)))
        if self.api_key not in (request.headers.get("x-api-key"),
                                request.headers.get("Authorization", "").removeprefix("Bearer ")):
            return _error(401, "invalid API key")
        if not body.get("model") or not body.get("max_tokens") or not body.get("messages"):
            return _error(400, "model, max_tokens and messages are required")
        if self._failures:
            status, retry_after_ms = self._failures.popleft()
            return _error(status, "try again later", {"retry-after-ms": retry_after_ms})
        content = self._content(body)
        return web.json_response(self._message(body, content))

    def _content(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        if self._replies:
            return self._replies.popleft()
        forced = (body.get("tool_choice") or {}).get("name")
        if forced in self._tools:
            payload = self._tools[forced](body)
            return [{"type": "tool_use", "id": f"toolu_{next(self._ids)}", "name": forced, "input": payload}]
        if self._text is not None:
            return [{"type": "text", "text": str(self._text(body))}]
        return [{"type": "text", "text": "echo: " + _user_text(body).splitlines()[0]}]

    def _message(self, body: dict[str, Any], content: list[dict[str, Any]]) -> dict[str, Any]:
        uses_tool = any(b["type"] == "tool_use" for b in content)
        return {
            "id": f"msg_{next(self._ids)}", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": "tool_use" if uses_tool else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": max(1, len(json.dumps(body)) // 4),
                      "output_tokens": max(1, len(json.dumps(content)) // 4)},
        }


def _user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    payload = {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}
    return web.json_response(payload, status=status, headers=headers)


@contextmanager
def fake_anthropic(api_key: str = DEFAULT_KEY) -> Iterator[FakeAnthropic]:
    """Run the fake Messages API on a free loopback port in a background thread."""
    server = FakeAnthropic(api_key=api_key, port=free_port())
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/messages", server.handle)
    runner = web.AppRunner(app)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", server.port).start())
        loop.run_forever()

    thread = threading.Thread(target=serve, name="fake-anthropic", daemon=True)
    thread.start()
    try:
        wait_for(lambda: port_open(server.port), what="fake Anthropic server")
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def fake_anthropic_fixture(*, api_key: str = DEFAULT_KEY) -> Any:
    """A pytest fixture running the fake for one test, named by what it is bound to in a test module:
    ``server = fake_anthropic_fixture(api_key=KEY)``."""

    @pytest.fixture
    def fixture() -> Iterator[FakeAnthropic]:
        with fake_anthropic(api_key=api_key) as server:
            yield server

    return fixture
