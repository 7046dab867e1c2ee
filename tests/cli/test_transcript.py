"""`orchestra transcript`: reading the local Slack workspace from a terminal without saying anything."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.localslack import Running
from bot.localslack.client import WorkspaceClient
from orchestra.settings import PROJECT_ROOT
from tests.support.services import free_port, wait_for
from tests.support.slack_workspace import local_slack

CHANNEL = "#devops-orchestra"
APPROVAL = [{"type": "section", "text": {"type": "mrkdwn", "text": "Deploy frontend to prod?"}},
            {"type": "actions", "elements": [
                {"type": "button", "action_id": "approve", "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "reject", "text": {"type": "plain_text", "text": "Reject"}}]}]


@pytest.fixture
def workspace() -> Iterator[tuple[Running, WorkspaceClient, WebClient]]:
    """A local workspace, a control client (people) and a Web API client (the bot)."""
    with local_slack() as (running, control):
        yield running, control, WebClient(token="xoxb-local", base_url=running.api_url)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ORCHESTRA_"))}


def _orchestra(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args, "--url", url], capture_output=True, text=True,
                          timeout=60, cwd=PROJECT_ROOT, env=_env())


@contextmanager
def _following(url: str, *args: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`orchestra transcript --follow` as a child process; its stdout lines collect in the list as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", "transcript", "--follow", "--url", url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT,
                            env={**_env(), "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in out), daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=10)  # everything it printed is in ``lines`` once the block ends


def _terminated(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM it, as a process manager would; its exit status and what it wrote to stderr."""
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(timeout=10)
    return status, proc.stderr.read() if proc.stderr else ""


def _a_deploy(control: WorkspaceClient, web: WebClient) -> dict[str, Any]:
    """Alice asks, the bot starts a run in the channel and threads a step under it, then edits the parent."""
    asked = control.say("can I ship frontend?", user="U0ALICE", channel=CHANNEL)
    parent = web.chat_postMessage(channel=CHANNEL, text="Deploying frontend to staging")
    built = web.chat_postMessage(channel=parent["channel"], thread_ts=parent["ts"], text="build passed")
    web.chat_update(channel=parent["channel"], ts=parent["ts"], text="Deployed frontend to staging")
    return {"asked": asked["ts"], "parent": parent["ts"], "built": built["ts"], "channel": parent["channel"]}


def test_the_channel_reads_like_the_conversation(workspace: tuple[Running, WorkspaceClient, WebClient]) -> None:
    running, control, web = workspace
    ts = _a_deploy(control, web)
    reply = control.say("thanks!", user="U0BOB", channel=CHANNEL, thread_ts=ts["parent"])
    hint = web.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="you can approve below")
    ask = web.chat_postMessage(channel=CHANNEL, text="Deploy frontend to prod?", blocks=APPROVAL)
    proc = _orchestra(running.url, "transcript")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{ts['asked']} U0ALICE: can I ship frontend?",
        f"{ts['parent']} U0ORCHESTRA: Deployed frontend to staging (edited)",
        f"    ↳ {ts['built']} U0ORCHESTRA: build passed",
        f"    ↳ {reply['ts']} U0BOB: thanks!",
        f"{hint['message_ts']} U0ORCHESTRA: (only U0ALICE sees this) you can approve below",
        f"{ask['ts']} U0ORCHESTRA: Deploy frontend to prod?",
        f"    [Approve] [Reject]  ← orchestra say --click {ask['ts']}:Approve",
    ]
    assert "Deploying" not in proc.stdout  # the edited parent is shown once, as it reads now


def test_last_n_messages_with_their_threads(workspace: tuple[Running, WorkspaceClient, WebClient]) -> None:
    running, control, web = workspace
    ts = _a_deploy(control, web)
    later = control.say("and staging is free again", user="U0CAROL", channel=CHANNEL)
    proc = _orchestra(running.url, "transcript", "--last", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{ts['parent']} U0ORCHESTRA: Deployed frontend to staging (edited)",
        f"    ↳ {ts['built']} U0ORCHESTRA: build passed",
        f"{later['ts']} U0CAROL: and staging is free again",
    ]
    said = _orchestra(running.url, "say", "--last", "2")  # nothing to say: the same read
    assert (said.returncode, said.stdout) == (0, proc.stdout), said.stderr


def test_follow_prints_what_arrives_once_and_stops_cleanly(
        workspace: tuple[Running, WorkspaceClient, WebClient]) -> None:
    running, control, web = workspace
    ts = _a_deploy(control, web)
    with _following(running.url, "--last", "1") as (proc, lines):
        wait_for(lambda: len(lines) == 2, what="the backlog")
        live = web.chat_postMessage(channel=ts["channel"], thread_ts=ts["parent"], text="live on :8080")
        web.chat_update(channel=ts["channel"], ts=ts["parent"], text="Deployed frontend to staging: done")
        wait_for(lambda: len(lines) >= 4, what="the reply and the edit")
        assert _terminated(proc) == (0, "")  # a clean stop: exit 0, no traceback
    assert len(lines) == 4 and lines[:2] == [f"{ts['parent']} U0ORCHESTRA: Deployed frontend to staging (edited)",
                         f"    ↳ {ts['built']} U0ORCHESTRA: build passed"]  # --last 1: not Alice's question
    assert sorted(lines[2:]) == sorted([f"{ts['parent']} U0ORCHESTRA: Deployed frontend to staging: done (edited)",
                                        f"    ↳ {live['ts']} U0ORCHESTRA: live on :8080"])  # in either order


def test_follow_puts_a_late_reply_under_its_thread(workspace: tuple[Running, WorkspaceClient, WebClient]) -> None:
    running, control, web = workspace
    ts = _a_deploy(control, web)
    later = control.say("anyone on call?", user="U0DAVE", channel=CHANNEL)
    with _following(running.url) as (proc, lines):
        wait_for(lambda: any("anyone on call?" in line for line in lines), what="the backlog")
        reply = web.chat_postMessage(channel=ts["channel"], thread_ts=ts["parent"], text="smoke tests passed")
        wait_for(lambda: any("smoke tests passed" in line for line in lines), what="the late reply")
        assert _terminated(proc) == (0, "")
    assert lines[-3:] == [
        f"{later['ts']} U0DAVE: anyone on call?",
        f"  ⋯ in the thread of {ts['parent']} U0ORCHESTRA: Deployed frontend to staging",
        f"    ↳ {reply['ts']} U0ORCHESTRA: smoke tests passed",
    ]


def test_an_unknown_channel_is_refused(workspace: tuple[Running, WorkspaceClient, WebClient]) -> None:
    running, _, _ = workspace
    proc = _orchestra(running.url, "transcript", "--channel", "#nope")
    assert proc.returncode == 1 and "unknown channel '#nope'" in proc.stderr


def test_a_workspace_that_is_not_running_says_how_to_start_it() -> None:
    proc = _orchestra(f"http://127.0.0.1:{free_port()}", "transcript")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "cannot reach the local Slack workspace" in proc.stderr
    assert "scripts/up" in proc.stderr and "orchestra slack-server" in proc.stderr
