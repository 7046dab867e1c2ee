"""The Web API methods the bot uses, answering like Slack does (subsets of the real shapes)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.localslack.state import APP_ID, BOT_ID, BOT_USER_ID, TEAM_ID

if TYPE_CHECKING:
    from bot.localslack.server import LocalSlack


async def auth_test(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    return {"url": "https://local.slack.test/", "team": "Local", "user": "orchestra", "team_id": TEAM_ID,
            "user_id": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID, "is_enterprise_install": False}


async def connections_open(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    return {"url": srv.base_url.replace("http://", "ws://", 1) + "/link"}


async def post_message(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    channel = srv.ws.channel_id(str(params.get("channel", "")))
    if channel is None:
        return {"error": "channel_not_found"}
    if not params.get("text") and not params.get("blocks"):
        return {"error": "no_text"}
    msg = srv.ws.post(channel, BOT_USER_ID, str(params.get("text", "")), params.get("blocks"),
                      params.get("thread_ts"), broadcast=str(params.get("reply_broadcast")).lower() in ("true", "1"))
    return {"channel": channel, "ts": msg.ts, "message": {"text": msg.text, "ts": msg.ts, "user": msg.user,
                                                          "bot_id": BOT_ID, "thread_ts": msg.thread_ts}}


async def update(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    channel = srv.ws.channel_id(str(params.get("channel", "")))
    msg = srv.ws.find(channel or "", str(params.get("ts", "")))
    if msg is None:
        return {"error": "message_not_found"}
    if msg.user != BOT_USER_ID:
        return {"error": "cant_update_message"}
    if "text" in params:
        msg.text = str(params["text"])
    msg.earlier_blocks.append(msg.blocks)
    if "blocks" in params:
        msg.blocks = params["blocks"] or []
    msg.edits += 1
    return {"channel": msg.channel, "ts": msg.ts, "text": msg.text}


async def post_ephemeral(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    channel = srv.ws.channel_id(str(params.get("channel", "")))
    user = str(params.get("user", ""))
    if channel is None:
        return {"error": "channel_not_found"}
    if user not in srv.ws.users:
        return {"error": "user_not_in_channel"}
    msg = srv.ws.post(channel, BOT_USER_ID, str(params.get("text", "")), params.get("blocks"),
                      params.get("thread_ts"), ephemeral_to=user)
    return {"message_ts": msg.ts}


async def replies(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    channel = srv.ws.channel_id(str(params.get("channel", ""))) or ""
    ts = str(params.get("ts", ""))
    found = [m for m in srv.ws.messages if m.channel == channel and m.ephemeral_to is None
             and (m.ts == ts or m.thread_ts == ts)]
    if not found:
        return {"error": "thread_not_found"}
    return {"messages": [_api_view(m) for m in found], "has_more": False}


async def history(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    channel = srv.ws.channel_id(str(params.get("channel", "")))
    if channel is None:
        return {"error": "channel_not_found"}
    top = [m for m in srv.ws.messages if m.channel == channel and m.ephemeral_to is None
           and m.thread_ts in (None, m.ts)]
    return {"messages": [_api_view(m) for m in reversed(top)], "has_more": False}


async def conversations_info(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    channel = srv.ws.channel_id(str(params.get("channel", "")))
    if channel is None:
        return {"error": "channel_not_found"}
    return {"channel": _channel(srv, channel)}


async def conversations_list(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    return {"channels": [_channel(srv, c) for c in srv.ws.channels if not c.startswith("D")],
            "response_metadata": {"next_cursor": ""}}


async def conversations_open(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    users = str(params.get("users", "")).split(",")
    if len(users) != 1 or users[0] not in srv.ws.users:
        return {"error": "user_not_found"}
    return {"channel": {"id": srv.ws.dm(users[0])}}


async def users_info(srv: LocalSlack, params: dict[str, Any]) -> dict[str, Any]:
    user = str(params.get("user", ""))
    if user not in srv.ws.users:
        return {"error": "user_not_found"}
    name = srv.ws.users[user]
    return {"user": {"id": user, "team_id": TEAM_ID, "name": name, "real_name": name.title(),
                     "is_bot": user == BOT_USER_ID, "profile": {"display_name": name}}}


def apply_response(srv: LocalSlack, channel: str, user: str, message_ts: str | None,
                   body: dict[str, Any]) -> None:
    """What a POST to a response_url does: replace/delete the original, or post a new message."""
    original = srv.ws.find(channel, message_ts) if message_ts else None
    if body.get("delete_original") and original is not None:
        srv.ws.messages.remove(original)
        return
    if body.get("replace_original") and original is not None:
        original.earlier_blocks.append(original.blocks)
        original.text = str(body.get("text", original.text))
        original.blocks = body.get("blocks") or []
        original.edits += 1
        return
    thread_ts = body.get("thread_ts")
    if body.get("response_type") == "in_channel":
        srv.ws.post(channel, BOT_USER_ID, str(body.get("text", "")), body.get("blocks"), thread_ts)
    else:
        srv.ws.post(channel, BOT_USER_ID, str(body.get("text", "")), body.get("blocks"), thread_ts,
                    ephemeral_to=user)


def _channel(srv: LocalSlack, cid: str) -> dict[str, Any]:
    return {"id": cid, "name": srv.ws.channels[cid], "is_channel": not cid.startswith("D"),
            "is_im": cid.startswith("D"), "is_member": True}


def _api_view(msg: Any) -> dict[str, Any]:
    view = {"type": "message", "ts": msg.ts, "user": msg.user, "text": msg.text, "blocks": msg.blocks}
    if msg.thread_ts:
        view["thread_ts"] = msg.thread_ts
    return view


METHODS = {
    "auth.test": auth_test, "apps.connections.open": connections_open, "chat.postMessage": post_message,
    "chat.update": update, "chat.postEphemeral": post_ephemeral, "conversations.replies": replies,
    "conversations.history": history, "conversations.info": conversations_info,
    "conversations.list": conversations_list, "conversations.open": conversations_open,
    "users.info": users_info,
}
