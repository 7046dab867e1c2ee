"""A small synchronous client for the local workspace's control API (tests, `orchestra say`)."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from orchestra.errors import OrchestraError

CONTROL = "/_control"


class WorkspaceClient:
    """Act as a user in the local workspace and read what everyone sees."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/").removesuffix("/api")
        self.timeout = timeout

    def command(self, text: str, *, user: str = "U0ALICE", channel: str | None = None) -> dict[str, Any]:
        """Type a slash command, e.g. ``"/deploy frontend hotfix-v2"``; returns the ack details."""
        return self._post("command", {"command": text, "user": user, "channel": channel})

    def say(self, text: str, *, user: str = "U0ALICE", channel: str | None = None,
            thread_ts: str | None = None, duplicates: int = 0) -> dict[str, Any]:
        """Write a message (mention the bot with ``<@U0ORCHESTRA>``, or use channel ``"dm"``)."""
        return self._post("message", {"text": text, "user": user, "channel": channel,
                                      "thread_ts": thread_ts, "duplicates": duplicates})

    def click(self, ts: str, button: str, *, user: str = "U0ALICE", channel: str | None = None,
              stale: bool = False) -> dict[str, Any]:
        """Press the button whose action_id or label is ``button`` on message ``ts``.

        ``stale``: press it as the message was before its last edit (a screen not yet refreshed).
        """
        return self._post("click", {"ts": ts, "action_id": button, "text": button, "user": user,
                                    "channel": channel, "stale": stale or None})

    def transcript(self, channel: str | None = None, *, user: str | None = None) -> list[dict[str, Any]]:
        """Top-level messages in order, each with its ``replies``; every channel unless one is named.

        ``channel="dm"`` reads ``user``'s DM with the bot; an unknown channel is refused.
        """
        query = urllib.parse.urlencode({k: v for k, v in {"channel": channel, "user": user}.items() if v})
        return list(self._get(f"transcript?{query}" if query else "transcript")["messages"])

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        query = f"?method={urllib.parse.quote(method)}" if method else ""
        return list(self._get(f"calls{query}")["calls"])

    def fail_next(self, method: str, *, count: int = 1, status: int = 200, error: str | None = None,
                  retry_after: int | None = None) -> None:
        """Make the next ``count`` calls of ``method`` fail (e.g. status 429 with retry_after)."""
        self._post("faults", {"method": method, "count": count, "status": status, "error": error,
                              "retry_after": retry_after})

    def rate_limit(self, *, enabled: bool = True, per_sec: float = 1.0, burst: float = 3.0) -> None:
        self._post("rate_limit", {"enabled": enabled, "per_sec": per_sec, "burst": burst})

    def add_channel(self, channel_id: str, name: str) -> None:
        self._post("channel", {"id": channel_id, "name": name})

    def disconnect(self) -> None:
        """Tell connected apps to reconnect (Slack's periodic refresh)."""
        self._post("disconnect", {})

    def reset(self) -> None:
        self._post("reset", {})

    def health(self) -> dict[str, Any]:
        return self._get("health")

    def _post(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
        request = urllib.request.Request(f"{self.url}{CONTROL}/{name}", data=data,
                                         headers={"Content-Type": "application/json"})
        return self._send(request)

    def _get(self, name: str) -> dict[str, Any]:
        return self._send(urllib.request.Request(f"{self.url}{CONTROL}/{name}"))

    def _send(self, request: urllib.request.Request) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (loopback)
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            raise OrchestraError(f"local Slack workspace refused: {detail}") from exc
        except urllib.error.URLError as exc:
            raise OrchestraError(f"cannot reach the local Slack workspace at {self.url}: {exc.reason}",
                                 hint="start it with `scripts/up` or `orchestra slack-server`, or pass --url") from exc
