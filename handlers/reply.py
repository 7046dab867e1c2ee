"""What every handler takes (who asked, and where) and gives back (a reply that any channel renders)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestra.store import Run


@dataclass(frozen=True)
class Who:
    """Who asked, and where: the channel decides what ``place`` and ``thread`` mean."""

    user: str
    source: str = "slack"  # slack | github | cli
    place: str | None = None  # a Slack channel id, a pull request "owner/name#7"
    thread: str | None = None
    via: str = "command"  # command | mention | dm | button | comment

    def origin(self) -> dict[str, Any]:
        """What a run started by this request remembers about where it came from."""
        if self.source != "slack":
            return {}
        origin: dict[str, Any] = {"slack_channel": self.place, "slack_user": self.user, "via": self.via}
        if self.thread:
            origin["slack_thread_ts"] = self.thread
        return origin


class ReplyKind(StrEnum):
    STARTED = "started"  # a run was started: ``run``
    ANSWER = "answer"  # ``text`` answers a question
    RUNS = "runs"  # ``runs`` are the runs asked about
    CANCELLED = "cancelled"  # ``run`` is being cancelled
    CONFIRM = "confirm"  # ask before acting: ``data`` has summary and payload
    DROPPED = "dropped"  # the user said no to a confirmation
    PLAN = "plan"  # what a deploy would do: ``data``
    HELP = "help"
    REFUSED = "refused"  # the request itself was refused: ``text`` says why
    DENIED = "denied"  # policy or a lock said no: ``text`` says why
    NOT_UNDERSTOOD = "not_understood"
    FAILED = "failed"  # our fault, logged


@dataclass
class Reply:
    """A channel-neutral reply; ``public`` replies may go where everyone sees them."""

    kind: ReplyKind
    text: str = ""
    public: bool = False
    run: Run | None = None
    runs: list[Run] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
