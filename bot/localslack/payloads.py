"""Payloads shaped like the ones Slack sends in socket-mode envelopes."""
from __future__ import annotations

import re
import time
from typing import Any

from bot.localslack.state import APP_ID, BOT_USER_ID, TEAM_ID, Message, Workspace

MARKUP = re.compile(r"<(?:[@#!]|https?:|mailto:)[^<>]*>")


def escape(text: str) -> str:
    """Text as Slack delivers what a person typed: & < > escaped, mention and link markup kept."""
    parts, last = [], 0
    for match in MARKUP.finditer(text):
        parts += [_escape(text[last:match.start()]), match.group(0)]
        last = match.end()
    return "".join([*parts, _escape(text[last:])])


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slash_command(ws: Workspace, *, user: str, channel: str, command: str, text: str,
                  response_url: str) -> dict[str, Any]:
    return {"token": "local", "team_id": TEAM_ID, "team_domain": "local", "channel_id": channel,
            "channel_name": ws.channels.get(channel, channel), "user_id": user,
            "user_name": ws.users.get(user, user), "command": command, "text": text,
            "api_app_id": APP_ID, "is_enterprise_install": "false", "response_url": response_url,
            "trigger_id": ws.next_id("trig")}


def event_callback(ws: Workspace, msg: Message, *, mention: bool) -> dict[str, Any]:
    is_dm = msg.channel.startswith("D")
    event: dict[str, Any] = {"type": "app_mention" if mention else "message", "user": msg.user,
                             "text": msg.text, "ts": msg.ts, "channel": msg.channel, "event_ts": msg.ts,
                             "team": TEAM_ID, "channel_type": "im" if is_dm else "channel"}
    if msg.thread_ts:
        event["thread_ts"] = msg.thread_ts
    return {"token": "local", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
            "type": "event_callback", "event_id": ws.next_id("Ev"), "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False}


def block_actions(ws: Workspace, msg: Message, button: dict[str, Any], *, user: str,
                  response_url: str) -> dict[str, Any]:
    now = f"{time.time():.6f}"
    return {"type": "block_actions", "team": {"id": TEAM_ID, "domain": "local"},
            "user": {"id": user, "username": ws.users.get(user, user), "name": ws.users.get(user, user),
                     "team_id": TEAM_ID},
            "api_app_id": APP_ID, "token": "local", "trigger_id": ws.next_id("trig"),
            "container": {"type": "message", "message_ts": msg.ts, "channel_id": msg.channel,
                          "is_ephemeral": msg.ephemeral_to is not None},
            "channel": {"id": msg.channel, "name": ws.channels.get(msg.channel, msg.channel)},
            "message": {"type": "message", "ts": msg.ts, "text": msg.text, "blocks": msg.blocks,
                        "user": msg.user, "thread_ts": msg.thread_ts},
            "response_url": response_url,
            "actions": [{"action_id": button["action_id"], "block_id": button.get("block_id"),
                         "text": {"type": "plain_text", "text": button.get("text") or ""},
                         "value": button.get("value"), "type": "button", "action_ts": now}]}
