"""The local Slack workspace and the bot, started for tests: in a thread, or as real processes."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.localslack import Running, start_in_thread
from bot.localslack.client import WorkspaceClient
from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.services import wait_for


@contextmanager
def local_slack(**options: Any) -> Iterator[tuple[Running, WorkspaceClient]]:
    """A local workspace on a free port, and a control client for it."""
    running = start_in_thread(**options)
    try:
        yield running, WorkspaceClient(running.url)
    finally:
        running.stop()


def process_env(settings: Settings, slack_api_url: str, **extra: str) -> dict[str, str]:
    """The environment an `orchestra` child process needs to join this test's world."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "ORCHESTRA_"))}
    env.update(REDIS_URL=settings.redis_url, SLACK_API_URL=slack_api_url, SLACK_BOT_TOKEN="xoxb-local",
               SLACK_APP_TOKEN="xapp-local", ORCHESTRA_WORKDIR=str(settings.workdir),
               ORCHESTRA_REPOS=",".join(settings.repos), ORCHESTRA_SLACK_CHANNEL="#devops-orchestra",
               ORCHESTRA_SANDBOX="none", PYTHONUNBUFFERED="1")  # services' tests on this host, as before
    env.update(extra)
    return env


@contextmanager
def orchestra_process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`orchestra ARGS` as a child process (output to ``log``); terminated on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", *args], env=env, cwd=PROJECT_ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def bot_process(settings: Settings, slack: WorkspaceClient, api_url: str, log: Path) -> Iterator[None]:
    """The real `orchestra bot`, connected to the local workspace before this returns."""
    with orchestra_process(["bot"], process_env(settings, api_url), log) as proc:
        wait_for(lambda: proc.poll() is None and slack.health()["sockets"] >= 1, timeout=20,
                 what=f"the bot connecting (log: {log})")
        yield


def thread_of(slack: WorkspaceClient, run_id: str, channel: str = "devops-orchestra") -> dict[str, Any] | None:
    """The parent message (with its replies) of a run, found by its run id."""
    for message in slack.transcript(channel):
        if run_id in message["text"] and message["ephemeral_to"] is None:
            return message
    return None


@contextmanager
def bot_in_thread(settings: Settings, slack: WorkspaceClient, *, relay: bool = True) -> Iterator[None]:
    """The bot (Bolt app + relay) on its own event loop in this process, connected before this returns."""
    import asyncio
    import threading

    from redis import Redis

    from bot.slack.process import serve

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    redis = Redis.from_url(settings.redis_url)

    def main() -> None:
        loop.run_until_complete(serve(settings, redis, relay=relay, stop=stop))

    thread = threading.Thread(target=main, name="bot", daemon=True)
    thread.start()
    try:
        wait_for(lambda: slack.health()["sockets"] >= 1, timeout=10, what="the bot connecting")
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        redis.close()
