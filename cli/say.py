"""`orchestra say`: act as a user in the local Slack workspace and print what the bot answered."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cli.transcript import render as render_transcript
from cli.transcript import workspace_url
from orchestra.settings import Settings

ANSWERERS = ("U0ORCHESTRA", "USLACKBOT")  # the bot, and Slack itself reporting a timeout
BUTTON_HELP = "press a button instead: TS:LABEL (e.g. 1795240357.000012:Approve)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("say", help="type a message or slash command in the local Slack workspace")
    parser.add_argument("text", nargs="?", help='"/deploy frontend hotfix-v2" or "<@U0ORCHESTRA> status" or a DM; '
                                                'none: only print the last messages (`orchestra transcript`)')
    parser.add_argument("--user", default="U0ALICE", help="who types it (user id or name; default U0ALICE)")
    parser.add_argument("--channel", help="channel name or id (default #devops-orchestra); 'dm' for a DM")
    parser.add_argument("--click", metavar="TS:LABEL", help=BUTTON_HELP)
    parser.add_argument("--url", help="the workspace (default: SLACK_API_URL when local, else port 3300)")
    parser.add_argument("--wait", type=float, default=3.0, help="at most this many seconds to wait for an answer")
    parser.add_argument("--last", type=int, default=5, help="show the last N messages with their threads (default 5)")
    parser.add_argument("--json", action="store_true", help="print the transcript as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Send the input, wait for the bot's answer, print the channel's transcript."""
    from bot.localslack.client import WorkspaceClient
    from orchestra.errors import OrchestraError

    client = WorkspaceClient(workspace_url(args.url, settings))
    if not args.text and not args.click:
        return _read(client, args, settings)
    before = _bot_lines(client.transcript(None if args.channel == "dm" else args.channel), args.user)
    if args.click:
        ts, sep, label = args.click.partition(":")
        if not sep:
            raise OrchestraError(f"--click wants TS:LABEL, got {args.click!r}")
        result = client.click(ts, label, user=args.user, channel=args.channel)
    else:
        result = _send(client, args)
    if not result.get("acked", True):
        print("the bot did not acknowledge within 3 s (is `orchestra bot` running?)")
    viewer = str(result.get("user", args.user))
    channel = None if args.channel == "dm" else args.channel
    messages = _answers(client, channel, viewer, before, args.wait)[-max(1, args.last):]
    print(json.dumps(messages, indent=2) if args.json else render(messages, viewer))
    return 0


def _read(client: Any, args: argparse.Namespace, settings: Settings) -> int:
    """Nothing to say: print the last messages as `orchestra transcript --last N` does."""
    user = args.user if args.channel == "dm" else None
    channel = args.channel or settings.slack_channel
    messages = client.transcript(channel, user=user)[-max(1, args.last):]
    print(json.dumps(messages, indent=2) if args.json else render_transcript(messages, channel))
    return 0


def _answers(client: Any, channel: str | None, viewer: str, before: int, wait_s: float) -> list[dict[str, Any]]:
    """The transcript once the bot has answered (or ``wait_s`` passed)."""
    deadline = time.monotonic() + wait_s
    while True:
        messages = client.transcript(channel)
        if _bot_lines(messages, viewer) > before or time.monotonic() >= deadline:
            return list(messages)
        time.sleep(0.1)


def _bot_lines(messages: list[dict[str, Any]], viewer: str) -> int:
    return sum(1 for m in messages for x in (m, *m["replies"])
               if x["user"] in ANSWERERS and x["ephemeral_to"] in (None, viewer))


def _send(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    if args.text.startswith("/"):
        return dict(client.command(args.text, user=args.user, channel=args.channel))
    return dict(client.say(args.text, user=args.user, channel=args.channel))


def render(messages: list[dict[str, Any]], viewer: str) -> str:
    """The transcript as a person in the channel sees it (their own ephemeral messages included)."""
    lines = []
    for msg in messages:
        if msg["ephemeral_to"] not in (None, viewer):
            continue
        lines.append(_line(msg, ""))
        lines.extend(_line(r, "    ↳ ") for r in msg["replies"] if r["ephemeral_to"] in (None, viewer))
    return "\n".join(lines) or "(nothing yet)"


def _line(msg: dict[str, Any], indent: str) -> str:
    who = "(only you) " if msg["ephemeral_to"] else ""
    edited = f" (edited {msg['edits']}x)" if msg["edits"] else ""
    buttons = "".join(f" [{b['text']}]" for b in msg["buttons"])
    text = msg["text"].replace("\n", f"\n{indent}    ")
    return f"{indent}{msg['ts']} {msg['user']}: {who}{text}{buttons}{edited}"
