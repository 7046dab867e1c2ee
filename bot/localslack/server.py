"""A local Slack workspace: the Web API methods the bot uses and socket mode, on loopback.

The real slack-sdk / slack-bolt clients talk to it unchanged (base URL
``http://127.0.0.1:PORT/api/``). Tests and ``orchestra say`` act as users
through the control API in :mod:`bot.localslack.control`, people in a browser
through the page at ``/`` (:mod:`bot.localslack.view`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.localslack import methods
from bot.localslack.state import Workspace

logger = logging.getLogger(__name__)

Method = Callable[["LocalSlack", dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class Fault:
    """An injected failure for the next calls of one method (HTTP status or Slack error)."""

    status: int = 200
    error: str | None = None
    retry_after: int | None = None


@dataclass
class RateLimit:
    """Slack's ~1 message/s per channel for chat.postMessage, as a token bucket (off by default)."""

    enabled: bool = False
    per_sec: float = 1.0
    burst: float = 3.0
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def retry_after(self, channel: str, now: float) -> int:
        """0 when a message may go now, otherwise whole seconds to wait (Retry-After)."""
        if not self.enabled:
            return 0
        tokens, at = self.buckets.get(channel, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_sec)
        if tokens < 1:
            self.buckets[channel] = (tokens, now)
            return max(1, int((1 - tokens) / self.per_sec + 0.999))
        self.buckets[channel] = (tokens - 1, now)
        return 0


class LocalSlack:
    """The server's behaviour; :meth:`application` wires it into aiohttp."""

    def __init__(self, *, bot_token: str = "xoxb-local", app_token: str = "xapp-local",
                 ack_timeout: float = 3.0, max_retries: int = 3) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.ws = Workspace()
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.rate = RateLimit()
        self.responses: dict[str, tuple[str, str, str | None]] = {}  # id -> channel, user, message ts
        self.base_url = ""
        self._turn = 0

    def application(self) -> web.Application:
        from bot.localslack import control, view

        app = web.Application()
        app.router.add_route("*", "/api/{method}", self.web_api)
        app.router.add_get("/link", self.socket)
        app.router.add_post("/response/{rid}", self.response_url)
        control.add_routes(app, self)
        view.add_routes(app)
        return app

    async def web_api(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        params = await _params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or params.get("token")
        self.ws.calls.append({"method": name, "at": time.time(), "args": params})
        fault = self._take_fault(name)
        if fault is not None:
            return _fault_response(fault)
        handler = methods.METHODS.get(name)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        wanted = self.app_token if name == "apps.connections.open" else self.bot_token
        if token != wanted:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if name == "chat.postMessage":
            wait = self.rate.retry_after(self.ws.channel_id(str(params.get("channel", ""))) or "", time.time())
            if wait:
                return _fault_response(Fault(status=429, error="ratelimited", retry_after=wait))
        body = await handler(self, params)
        return web.json_response({"ok": "error" not in body, **body})

    def _take_fault(self, name: str) -> Fault | None:
        queue = self.faults.get(name) or self.faults.get("*")
        return queue.pop(0) if queue else None

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self.sockets),
                            "debug_info": {"host": "localslack"}, "connection_info": {"app_id": "local"}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_ack(json.loads(msg.data))
        finally:
            self.sockets.remove(ws)
        return ws

    def _on_ack(self, ack: dict[str, Any]) -> None:
        future = self.acks.get(str(ack.get("envelope_id")))
        if future is not None and not future.done():
            future.set_result(ack)

    async def deliver(self, kind: str, payload: dict[str, Any], *, duplicates: int = 0) -> dict[str, Any]:
        """Send an envelope and wait for its ack; events are re-sent on timeout like Slack does.

        ``duplicates`` re-sends an event that many extra times even when acked (Slack retries).
        """
        attempt, first = 0, None
        while True:
            result = await self._send_once(kind, payload, attempt)
            first = first or result
            attempt += 1
            retry = kind == "events_api" and attempt <= self.max_retries and (
                not result["acked"] or attempt <= duplicates)
            if not retry:
                return {**first, "attempts": attempt}

    async def _send_once(self, kind: str, payload: dict[str, Any], attempt: int) -> dict[str, Any]:
        envelope_id = self.ws.next_id("env-")
        envelope: dict[str, Any] = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                                    "accepts_response_payload": kind != "events_api"}
        if kind == "events_api":
            envelope.update(retry_attempt=attempt, retry_reason="timeout" if attempt else "")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.acks[envelope_id] = future
        started = time.perf_counter()
        try:
            sock = await self._pick_socket()
            await sock.send_json(envelope)
            ack = await asyncio.wait_for(future, self.ack_timeout)
            return {"envelope_id": envelope_id, "acked": True, "ack": ack.get("payload"),
                    "ack_ms": (time.perf_counter() - started) * 1000}
        except (TimeoutError, ConnectionError):
            return {"envelope_id": envelope_id, "acked": False, "ack": None, "ack_ms": None}
        finally:
            self.acks.pop(envelope_id, None)

    async def _pick_socket(self) -> web.WebSocketResponse:
        deadline = time.monotonic() + self.ack_timeout
        while not self.sockets:  # the app may be (re)connecting
            if time.monotonic() > deadline:
                raise ConnectionError("no app is connected over socket mode")
            await asyncio.sleep(0.02)
        self._turn += 1
        return self.sockets[self._turn % len(self.sockets)]

    async def response_url(self, request: web.Request) -> web.Response:
        target = self.responses.get(request.match_info["rid"])
        if target is None:
            return web.Response(status=404, text="no such response_url")
        body = await request.json()
        self.ws.calls.append({"method": "response_url", "at": time.time(), "args": body})
        channel, user, message_ts = target
        methods.apply_response(self, channel, user, message_ts, body)
        return web.Response(text="ok")

    def new_response_url(self, channel: str, user: str, message_ts: str | None = None) -> str:
        rid = self.ws.next_id("R")
        self.responses[rid] = (channel, user, message_ts)
        return f"{self.base_url}/response/{rid}"


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            params.update(await request.json())
        else:
            params.update(dict(await request.post()))
    for key in ("blocks", "attachments"):
        if isinstance(params.get(key), str):
            params[key] = json.loads(params[key])
    return params


def _fault_response(fault: Fault) -> web.Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    return web.json_response({"ok": False, "error": fault.error or "internal_error"},
                             status=fault.status, headers=headers)
