"""`orchestra demo`: play the README's story in the local Slack workspace of a running product, then print it.

    scripts/up                  # in one terminal: the product, serving .state/shop
    .venv/bin/orchestra demo    # in another

1. alice deploys ``frontend hotfix-v2`` to staging (its dependency, backend, comes along);
2. alice deploys both to production (canary; production never adds a dependency on its own): the run
   waits for an approval, which bob gives;
3. alice deploys ``release/faulty`` to production, bob approves, and the canary judge rolls it back;
4. alice asks the bot in a DM "why did prod roll back?" and gets the judge's reason.

Everything goes through the workspace as `orchestra say` does (commands, button presses, DMs): the
bot, the workers, Docker, nginx and Prometheus do the work. Exits 0 when each step ended as the story
says, else 1 naming the step.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cli.transcript import render, workspace_url
from orchestra.errors import OrchestraError
from orchestra.ids import RUN_ID
from orchestra.settings import Settings

Message = dict[str, Any]
BOT = "U0ORCHESTRA"
FINISHED = ":white_check_mark: Run", ":x: Run", ":no_entry_sign: Run", ":octagonal_sign: Run"
START_HINT = ("start the product first, in another terminal: `scripts/up` (it serves the demo repository "
              ".state/shop and the local Slack workspace on port 3300), then run `orchestra demo` again")


@dataclass(frozen=True)
class Step:
    """One deploy of the story: what alice types, whether bob must approve, how it must end."""

    command: str
    approve: bool
    succeeds: bool
    expect: str  # a reply the thread must contain


STORY = (
    Step("/deploy frontend hotfix-v2", approve=False, succeeds=True, expect=":white_check_mark: Deployed"),
    Step("/deploy frontend and backend hotfix-v2 to prod", approve=True, succeeds=True,
         expect=":white_check_mark: Deployed"),
    Step("/deploy frontend release/faulty to prod", approve=True, succeeds=False,
         expect=":leftwards_arrow_with_hook: Rolled back frontend"),
)
QUESTION = "why did prod roll back?"


class DemoFailed(OrchestraError):
    """A step of the story did not end as it should."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="play the README's story in the local Slack workspace")
    parser.add_argument("--url", help="the workspace (default: SLACK_API_URL when local, else port 3300)")
    parser.add_argument("--user", default="U0ALICE", help="who deploys and asks (default U0ALICE)")
    parser.add_argument("--approver", default="U0BOB", help="who approves production (default U0BOB)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each run may take (default 900)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.localslack.client import WorkspaceClient

    url = workspace_url(args.url, settings)
    client = WorkspaceClient(url, timeout=10.0)
    _check_running(client, url)
    channel = settings.slack_channel
    story = Story(client, channel, args.user, args.approver, args.timeout)
    try:
        for step in STORY:
            story.deploy(step)
        answer = story.ask(QUESTION)
    except DemoFailed as exc:
        print(render(client.transcript(channel), channel))
        raise exc
    print(f"\n== {channel} ==")
    print(render(client.transcript(channel), channel))
    print(f"\n== DM: {args.user} asked \"{QUESTION}\" ==\n{answer}")
    return 0


def _check_running(client: Any, url: str) -> None:
    """The workspace answers and a bot is connected to it, or a clear error saying how to start them."""
    try:
        health = client.health()
    except (OSError, OrchestraError) as exc:
        raise OrchestraError(f"no local Slack workspace answers at {url}", hint=START_HINT) from exc
    if not health.get("sockets"):
        raise OrchestraError(f"the local Slack workspace at {url} has no bot connected", hint=START_HINT)


@dataclass
class Story:
    """Plays steps as users of the workspace, and reads the bot's answers from it."""

    client: Any
    channel: str
    user: str
    approver: str
    timeout: float

    def deploy(self, step: Step) -> None:
        run_id = self._start(step.command)
        if step.approve:
            ask = self._wait(lambda: next((r for r in self._replies(run_id) if r["buttons"]), None),
                             f"`{step.command}` ({run_id}): the approval request in its thread")
            say(f"{self.approver} presses Approve")
            self.client.click(ask["ts"], "Approve", user=self.approver)
        replies = self._wait(lambda: self._finished(run_id), f"`{step.command}` ({run_id}): the run finishing")
        ended = replies[-1]
        if ended.startswith(":white_check_mark: Run") != step.succeeds or not any(
                r.startswith(step.expect) for r in replies):
            raise DemoFailed(f"`{step.command}` ({run_id}) did not end as the story says: it should "
                             f"{'succeed' if step.succeeds else 'fail'} with a reply starting {step.expect!r}; "
                             f"it ended with {ended!r}", hint=_hint(replies))
        say(f"  {run_id}: {ended}")

    def ask(self, question: str) -> str:
        say(f"{self.user} (DM): {question}")
        before = len(self._dm())
        self.client.say(question, user=self.user, channel="dm")
        answer = self._wait(lambda: next((m["text"] for m in self._dm()[before:] if m["user"] == BOT), None),
                            "the answer in the DM", timeout=60)
        return str(answer)

    def _start(self, command: str) -> str:
        say(f"{self.user}: {command}")
        known = {m["ts"] for m in self._messages()}
        result = self.client.command(command, user=self.user, channel=self.channel)
        if not result.get("acked", True):
            raise DemoFailed("the bot did not acknowledge the command within 3 s", hint=START_HINT)

        def started() -> str | None:
            for message in self._messages():
                found = RUN_ID.search(message["text"])
                if message["ts"] not in known and message["user"] == BOT and found:
                    return found.group(0)
                if message["ts"] not in known and message["ephemeral_to"] == self.user and message["user"] == BOT \
                        and not found:
                    raise DemoFailed(f"`{command}` started no run: {message['text']}")
            return None
        return str(self._wait(started, f"a run for `{command}`", timeout=30))

    def _messages(self) -> list[Message]:
        return list(self.client.transcript(self.channel, user=self.user))

    def _dm(self) -> list[Message]:
        return list(self.client.transcript("dm", user=self.user))

    def _replies(self, run_id: str) -> list[Message]:
        parent = next((m for m in self._messages() if run_id in m["text"] and m["ephemeral_to"] is None), None)
        return list(parent["replies"]) if parent else []

    def _finished(self, run_id: str) -> list[str] | None:
        texts = [r["text"] for r in self._replies(run_id)]
        return texts if texts and texts[-1].startswith(FINISHED) else None

    def _wait(self, found: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            time.sleep(0.5)
        raise DemoFailed(f"timed out waiting for {what}",
                         hint="is `scripts/up` still running? `orchestra transcript` shows where the run is")


def _hint(replies: list[str]) -> str:
    problems = [r for r in replies if r.startswith((":x:", ":no_entry:", ":rotating_light:"))]
    hint = "; ".join(problems[:3]) or "read the thread: `orchestra transcript`"
    if not any(r.startswith(":ship:") for r in replies):  # it never reached the deploy: the code, not the story
        hint += (". The story needs the demo repository's branches (hotfix-v2, release/faulty): `scripts/up` "
                 "serves .state/shop; with `orchestra up`, set ORCHESTRA_REPOS to a repository made by "
                 "`scripts/make-demo-repo`")
    return hint


def say(line: str) -> None:
    print(line, flush=True)
