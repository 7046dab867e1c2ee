"""The local workspace's memory: users, channels, messages by channel and thread, API calls."""
from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

TEAM_ID = "T0LOCAL"
BOT_USER_ID = "U0ORCHESTRA"
BOT_ID = "B0ORCHESTRA"
APP_ID = "A0ORCHESTRA"
DEFAULT_CHANNEL = ("C0DEPLOYS", "devops-orchestra")
DEFAULT_USERS = {"U0ALICE": "alice", "U0BOB": "bob", "U0CAROL": "carol", "U0DAVE": "dave",
                 BOT_USER_ID: "orchestra"}


@dataclass
class Message:
    """One message as the workspace shows it."""

    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    ephemeral_to: str | None = None  # only this user sees it
    broadcast: bool = False  # a thread reply also shown in the channel (reply_broadcast)
    edits: int = 0
    earlier_blocks: list[list[dict[str, Any]]] = field(default_factory=list)  # before each edit

    def view(self) -> dict[str, Any]:
        return {"channel": self.channel, "ts": self.ts, "user": self.user, "text": self.text,
                "blocks": self.blocks, "thread_ts": self.thread_ts, "ephemeral_to": self.ephemeral_to,
                "edits": self.edits, "buttons": buttons(self.blocks), "reply_broadcast": self.broadcast}


@dataclass
class Workspace:
    """Everything the server remembers; one instance per server."""

    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    channels: dict[str, str] = field(default_factory=lambda: {DEFAULT_CHANNEL[0]: DEFAULT_CHANNEL[1]})
    messages: list[Message] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    _tag: str = field(default_factory=lambda: secrets.token_hex(3).upper())

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq):06d}"

    def next_id(self, prefix: str) -> str:
        """Ids unique across servers too (Slack's event ids are global)."""
        return f"{prefix}{self._tag}{next(self._seq):06d}"

    def channel_id(self, ref: str) -> str | None:
        """A channel id from an id, a name or ``#name``; a user id opens their DM."""
        ref = ref.lstrip("#")
        if ref in self.channels:
            return ref
        for cid, name in self.channels.items():
            if name == ref:
                return cid
        if ref in self.users:
            return self.dm(ref)
        return None

    def dm(self, user: str) -> str:
        cid = "D" + user[1:]
        self.channels.setdefault(cid, f"dm-{self.users.get(user, user)}")
        return cid

    def post(self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None,
             thread_ts: str | None = None, ephemeral_to: str | None = None, broadcast: bool = False) -> Message:
        msg = Message(channel, self.next_ts(), user, text or "", blocks or [], thread_ts or None,
                      ephemeral_to, broadcast=bool(broadcast and thread_ts))
        self.messages.append(msg)
        return msg

    def find(self, channel: str, ts: str) -> Message | None:
        for msg in self.messages:
            if msg.channel == channel and msg.ts == ts:
                return msg
        return None

    def transcript(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Top-level messages in order, each with its thread replies (a broadcast reply is in both)."""
        rows = []
        for msg in self.messages:
            if channel is not None and msg.channel != channel:
                continue
            if msg.thread_ts is None or msg.thread_ts == msg.ts:
                replies = [m.view() for m in self.messages
                           if m.channel == msg.channel and m.thread_ts == msg.ts and m.ts != msg.ts]
                rows.append({**msg.view(), "replies": replies})
            elif msg.broadcast:
                rows.append({**msg.view(), "replies": []})
        return rows


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The buttons of a message's actions blocks, as {action_id, text, value, block_id}."""
    out = []
    for block in blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("type") == "button":
                out.append({"action_id": element.get("action_id"), "value": element.get("value"),
                            "text": (element.get("text") or {}).get("text"), "block_id": block.get("block_id"),
                            "style": element.get("style")})
    return out
