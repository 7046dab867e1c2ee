"""The control API: act as a user (slash command, message, mention, button) and read the transcript."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.localslack import payloads
from bot.localslack.server import Fault
from bot.localslack.state import BOT_USER_ID, DEFAULT_CHANNEL, Workspace

if TYPE_CHECKING:
    from bot.localslack.server import LocalSlack

PREFIX = "/_control"


def add_routes(app: web.Application, srv: LocalSlack) -> None:
    routes = {"command": command, "message": message, "click": click, "faults": faults,
              "rate_limit": rate_limit, "reset": reset, "user": add_user, "channel": add_channel,
              "disconnect": disconnect}
    for name, handler in routes.items():
        app.router.add_post(f"{PREFIX}/{name}", _bind(srv, handler))
    app.router.add_get(f"{PREFIX}/transcript", _bind(srv, transcript))
    app.router.add_get(f"{PREFIX}/calls", _bind(srv, calls))
    app.router.add_get(f"{PREFIX}/health", _bind(srv, health))
    app.router.add_get(f"{PREFIX}/workspace", _bind(srv, workspace))


def _bind(srv: LocalSlack, handler: Any) -> Any:
    async def route(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else dict(request.query)
        try:
            return web.json_response(await handler(srv, body))
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
    return route


async def command(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    """A user types a slash command: ``{"user", "channel", "command": "/deploy", "text"}``."""
    user, channel = _user(srv.ws, body), _channel(srv.ws, body)
    name, _, text = str(body.get("command", "")).strip().partition(" ")
    if not name.startswith("/"):
        raise ValueError("command must start with '/', e.g. /deploy")
    text = payloads.escape(str(body.get("text", text)).strip())
    url = srv.new_response_url(channel, user)
    payload = payloads.slash_command(srv.ws, user=user, channel=channel, command=name, text=text,
                                     response_url=url)
    result = await srv.deliver("slash_commands", payload)
    ack = result.get("ack") or {}
    if ack.get("text") or ack.get("blocks"):  # an ack with a body is shown to the user right away
        srv.ws.post(channel, BOT_USER_ID, str(ack.get("text", "")), ack.get("blocks"), ephemeral_to=user)
    if not result["acked"]:
        srv.ws.post(channel, "USLACKBOT", f"{name} failed with the error \"operation_timeout\"",
                    ephemeral_to=user)
    return {"ok": True, "user": user, **result}


async def message(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    """A user writes ``text`` in a channel, a thread, or a DM (``"channel": "dm"``)."""
    user = _user(srv.ws, body)
    channel = srv.ws.dm(user) if body.get("channel") == "dm" else _channel(srv.ws, body)
    text = payloads.escape(str(body.get("text", "")))
    if not text.strip():
        raise ValueError("text is empty")
    msg = srv.ws.post(channel, user, text, thread_ts=body.get("thread_ts"))
    mention = f"<@{BOT_USER_ID}>" in text and not channel.startswith("D")
    if not mention and not channel.startswith("D"):
        return {"ok": True, "ts": msg.ts, "user": user, "delivered": False}  # bots hear mentions and DMs
    payload = payloads.event_callback(srv.ws, msg, mention=mention)
    result = await srv.deliver("events_api", payload, duplicates=int(body.get("duplicates", 0)))
    return {"ok": True, "ts": msg.ts, "user": user, "channel": channel, "event_id": payload["event_id"],
            **result}


async def click(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    """A user presses a button: ``{"user", "channel", "ts", "action_id" | "text", "stale"}``.

    ``stale`` presses it on the message as it was before its edits: a second user
    whose screen still shows the buttons another user's click already removed.
    """
    user, channel = _user(srv.ws, body), _channel(srv.ws, body)
    msg = srv.ws.find(channel, str(body.get("ts", "")))
    if msg is None:
        raise ValueError(f"no message {body.get('ts')!r} in {channel}")
    from bot.localslack.state import buttons

    versions = [msg.blocks, *reversed(msg.earlier_blocks)] if body.get("stale") else [msg.blocks]
    wanted = [b for shown in versions for b in buttons(shown)
              if b["action_id"] == body.get("action_id") or b["text"] == body.get("text")]
    if not wanted:
        raise ValueError(f"message {msg.ts} has no button {body.get('action_id') or body.get('text')!r}")
    url = srv.new_response_url(channel, user, msg.ts)
    payload = payloads.block_actions(srv.ws, msg, wanted[0], user=user, response_url=url)
    return {"ok": True, "user": user, **await srv.deliver("interactive", payload)}


async def transcript(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    """Top-level messages with their threads: of one channel (``"dm"``: the user's DM), else of all.

    An unknown channel is an error, not every channel: a typo must not look like a transcript.
    """
    if not body.get("channel"):
        return {"ok": True, "messages": srv.ws.transcript()}
    channel = srv.ws.dm(_user(srv.ws, body)) if body["channel"] == "dm" else _channel(srv.ws, body)
    return {"ok": True, "messages": srv.ws.transcript(channel)}


async def calls(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    method = body.get("method")
    rows = [c for c in srv.ws.calls if method is None or c["method"] == method]
    return {"ok": True, "calls": rows}


async def faults(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    """The next ``count`` calls of ``method`` fail with ``status``/``error``/``retry_after``."""
    fault = Fault(status=int(body.get("status", 200)), error=body.get("error"),
                  retry_after=body.get("retry_after"))
    srv.faults.setdefault(str(body.get("method", "*")), []).extend([fault] * int(body.get("count", 1)))
    return {"ok": True}


async def rate_limit(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    srv.rate.enabled = bool(body.get("enabled", True))
    srv.rate.per_sec = float(body.get("per_sec", srv.rate.per_sec))
    srv.rate.burst = float(body.get("burst", srv.rate.burst))
    srv.rate.buckets.clear()
    return {"ok": True}


async def reset(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    srv.ws.messages.clear()
    srv.ws.calls.clear()
    srv.faults.clear()
    srv.rate.enabled = False
    return {"ok": True}


async def add_user(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    srv.ws.users[str(body["id"])] = str(body.get("name", body["id"]))
    return {"ok": True}


async def add_channel(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    srv.ws.channels[str(body["id"])] = str(body.get("name", body["id"]))
    return {"ok": True}


async def disconnect(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    """Ask every connected app to reconnect, as Slack does when it refreshes a socket-mode link."""
    for sock in list(srv.sockets):
        await sock.send_json({"type": "disconnect", "reason": "refresh_requested",
                              "debug_info": {"host": "localslack"}})
    return {"ok": True, "sockets": len(srv.sockets)}


async def health(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "sockets": len(srv.sockets)}


async def workspace(srv: LocalSlack, body: dict[str, Any]) -> dict[str, Any]:
    """Who and where: the users (the bot among them) and the channels other than DMs."""
    channels = {cid: name for cid, name in srv.ws.channels.items() if not cid.startswith("D")}
    return {"ok": True, "users": dict(srv.ws.users), "bot_user": BOT_USER_ID, "channels": channels,
            "default_channel": DEFAULT_CHANNEL[0]}


def _user(ws: Workspace, body: dict[str, Any]) -> str:
    user = str(body.get("user") or "U0ALICE")
    if user not in ws.users:
        by_name = {name: uid for uid, name in ws.users.items()}
        if user.lstrip("@") not in by_name:
            raise ValueError(f"unknown user {user!r}; known: {', '.join(ws.users)}")
        user = by_name[user.lstrip("@")]
    return user


def _channel(ws: Workspace, body: dict[str, Any]) -> str:
    ref = str(body.get("channel") or DEFAULT_CHANNEL[0])
    channel = ws.channel_id(ref)
    if channel is None:
        raise ValueError(f"unknown channel {ref!r}; known: {', '.join(ws.channels.values())}")
    return channel
