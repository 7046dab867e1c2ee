"""A local server that speaks OpenAI chat completions, for the real ``openai`` SDK (via ``base_url``).

    with fake_openai() as server:                      # api_key=None: any key (or none) is taken
        server.on_schema("record_intent_guess", lambda body: {"intent": "status", ...})
        server.reply("not json")                       # the next answer, verbatim
        server.fail(429)                               # the next request gets a 429
        settings = server.client_settings(settings)    # protocol openai, this server's URL

Replies, in order: queued failures, queued replies, a handler for the requested JSON schema
(``response_format.json_schema.name``), else an echo of the last user message. Every request body
is kept in ``server.requests``.
"""
from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.support.fake_github import serve_in_thread

if TYPE_CHECKING:
    from orchestra.settings import Settings

Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class FakeOpenAI:
    api_key: str | None = None
    json_object_only: bool = False  # refuse {"type": "json_schema"} as llama-cpp-python's server does
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    _failures: deque[int] = field(default_factory=deque)
    _replies: deque[str] = field(default_factory=deque)
    _schemas: dict[str, Handler] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def client_settings(self, settings: Settings, *, model: str = "local-model") -> Settings:
        return settings.with_(llm_protocol="openai", llm_url=self.base_url, llm_api_key=self.api_key,
                              llm_model=model, llm_price=(0.0, 0.0))

    def fail(self, status: int, *, times: int = 1) -> None:
        self._failures.extend([status] * times)

    def reply(self, content: str) -> None:
        self._replies.append(content)

    def on_schema(self, name: str, handler: Handler) -> None:
        self._schemas[name] = handler

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_api_key", "Incorrect API key provided")
        if not body.get("model") or not body.get("messages"):
            return _error(400, "invalid_request_error", "model and messages are required")
        if self.json_object_only and (body.get("response_format") or {}).get("type") == "json_schema":
            return _error(500, "server_error", "response_format.type: Input should be 'text' or 'json_object'")
        if self._failures:
            status = self._failures.popleft()
            return _error(status, "rate_limit_exceeded" if status == 429 else "server_error", "try again later")
        return web.json_response(self._completion(body, self._content(body)))

    def _content(self, body: dict[str, Any]) -> str:
        if self._replies:
            return self._replies.popleft()
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("name") or (fmt.get("schema") or {}).get("title")
        handler = self._schemas.get(schema) or self._schemas.get(f"record_{str(schema).lower()}")
        if handler is not None:
            return json.dumps(handler(body))
        return "echo: " + str(body["messages"][-1]["content"]).splitlines()[0]

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        prompt = max(1, len(json.dumps(body["messages"])) // 4)
        return {"id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion", "created": 1_764_460_800,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": max(1, len(content) // 4),
                          "total_tokens": prompt + max(1, len(content) // 4)}}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": code, "code": code}}, status=status)


@contextmanager
def fake_openai(api_key: str | None = None, *, json_object_only: bool = False) -> Iterator[FakeOpenAI]:
    """Run the fake chat-completions API (``/v1/chat/completions``) on a free loopback port."""
    server = FakeOpenAI(api_key=api_key, json_object_only=json_object_only)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    with serve_in_thread(app, name="fake-openai") as url:
        server.base_url = f"{url}/v1"
        yield server
