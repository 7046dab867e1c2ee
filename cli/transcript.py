"""`orchestra transcript`: read the local Slack workspace's channel and threads without saying anything."""
from __future__ import annotations

import argparse
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.localslack.state import DEFAULT_CHANNEL
from cli.slack_server import DEFAULT_PORT
from orchestra.settings import Settings

POLL_S = 0.3  # --follow asks the workspace this often; it is on loopback and answers from memory
REPLY = "    ↳ "
LOOPBACK = ("http://127.0.0.1", "http://localhost", "http://[::1]")
NOTHING_YET = "(nothing yet in {channel})"

Message = dict[str, Any]


class Reader(Protocol):
    """What reading needs of :class:`bot.localslack.client.WorkspaceClient`."""

    def transcript(self, channel: str | None = None, *, user: str | None = None) -> list[Message]: ...


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("transcript", help="print the local Slack workspace's channel and threads")
    parser.add_argument("--url", help="the workspace (default: SLACK_API_URL when local, else port 3300)")
    parser.add_argument("--channel", help="channel name or id, or a user id for their DM "
                                          "(default: ORCHESTRA_SLACK_CHANNEL, #devops-orchestra)")
    parser.add_argument("--last", type=positive, metavar="N", help="only the last N messages, with their threads")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new messages, replies and edits until Ctrl-C")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the channel's messages and threads; with ``--follow``, then whatever changes."""
    from bot.localslack.client import WorkspaceClient

    client = WorkspaceClient(workspace_url(args.url, settings), timeout=10.0)
    channel = args.channel or settings.slack_channel
    messages = client.transcript(channel)
    recent = messages[-args.last:] if args.last else messages
    if not args.follow:
        print(render(recent, channel))
        return 0
    printer = Printer()
    _emit(printer.changes(recent) or [NOTHING_YET.format(channel=channel)])
    printer.skip(messages)  # older than --last: only their new replies and edits will print
    with stop_on_signals() as stop:
        follow(client, channel, printer, stop)
    return 0


def follow(client: Reader, channel: str, printer: Printer, stop: threading.Event,
           interval: float = POLL_S) -> None:
    """Print what is new or edited in ``channel`` every ``interval`` seconds until ``stop`` is set."""
    while not stop.wait(interval):
        _emit(printer.changes(client.transcript(channel)))


def render(messages: list[Message], channel: str) -> str:
    """A transcript as text: everyone's messages, replies indented, ephemeral ones marked."""
    return "\n".join(Printer().changes(messages)) or NOTHING_YET.format(channel=channel)


@dataclass
class Printer:
    """Turns successive transcripts into the lines not printed yet (new messages, and edits)."""

    shown: dict[str, int] = field(default_factory=dict)  # ts -> edits when last printed
    thread: str | None = None  # the parent whose block the last line belongs to

    def skip(self, messages: list[Message]) -> None:
        """Count these messages (and their replies) as printed, so only their changes print."""
        for parent in messages:
            for msg in (parent, *parent["replies"]):
                self.shown[msg["ts"]] = msg["edits"]

    def changes(self, messages: list[Message]) -> list[str]:
        """Lines for each message not printed yet or edited since, replies under their parent."""
        lines: list[str] = []
        for parent in messages:
            if self._changed(parent):
                lines.extend(line(parent, ""))
                self.thread = parent["ts"]
            for reply in (r for r in parent["replies"] if self._changed(r)):
                if self.thread != parent["ts"]:
                    lines.append(thread_header(parent))
                    self.thread = parent["ts"]
                lines.extend(line(reply, REPLY))
        return lines

    def _changed(self, msg: Message) -> bool:
        if self.shown.get(msg["ts"], -1) >= msg["edits"]:
            return False
        self.shown[msg["ts"]] = msg["edits"]
        return True


def line(msg: Message, indent: str) -> list[str]:
    """``TS USER: text``, continued lines aligned, then the buttons and how to press one."""
    pad = " " * len(indent)
    who = f"(only {msg['ephemeral_to']} sees this) " if msg["ephemeral_to"] else ""
    edited = " (edited)" if msg["edits"] else ""
    text = text_of(msg).replace("\n", f"\n{pad}    ")
    lines = [f"{indent}{msg['ts']} {msg['user']}: {who}{text}{edited}"]
    if msg["buttons"]:
        labels = " ".join(f"[{b['text']}]" for b in msg["buttons"])
        lines.append(f"{pad}    {labels}  ← {click_hint(msg)}")
    return lines


def click_hint(msg: Message) -> str:
    """The `orchestra say` that presses the message's first button (its channel and viewer if need be)."""
    words = ["orchestra", "say", "--click", f"{msg['ts']}:{msg['buttons'][0]['text']}"]
    if msg["channel"] != DEFAULT_CHANNEL[0]:
        words += ["--channel", msg["channel"]]
    if msg["ephemeral_to"]:
        words += ["--user", msg["ephemeral_to"]]
    return shlex.join(words)


def thread_header(parent: Message) -> str:
    """Where a reply belongs when its parent was printed further up."""
    first = text_of(parent).partition("\n")[0]
    snippet = first if len(first) <= 60 else f"{first[:59]}…"
    return f"  ⋯ in the thread of {parent['ts']} {parent['user']}: {snippet}"


def text_of(msg: Message) -> str:
    """The message's text, or its blocks' text when it was posted with blocks only."""
    if msg["text"]:
        return str(msg["text"])
    parts = [(b.get("text") or {}).get("text", "") for b in msg.get("blocks", [])]
    return "\n".join(p for p in parts if p)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM (a clean stop, exit 0), the usual handlers back afterwards."""
    stop = threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def workspace_url(url: str | None, settings: Settings) -> str:
    """``--url``, else SLACK_API_URL when it is a local workspace, else the default port."""
    if url:
        return url
    if settings.slack_api_url.startswith(LOOPBACK):
        return settings.slack_api_url
    return f"http://127.0.0.1:{DEFAULT_PORT}"


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"wants a number of messages, 1 or more; got {value}")
    return number


def _emit(lines: list[str]) -> None:
    if lines:
        print("\n".join(lines), flush=True)
