"""`orchestra slack-server` and `orchestra say`: a person trying the bot from a terminal."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack, orchestra_process, process_env


def _say(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ORCHESTRA_"))}
    return subprocess.run([sys.executable, "-m", "cli", "say", "--url", url, "--wait", "5", *args],
                          capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT, env=env)


def test_say_a_slash_command_and_see_the_answer(settings: Settings) -> None:
    with local_slack() as (running, control):
        bot_settings = settings.with_(slack_api_url=running.api_url, repos=(str(PROJECT_ROOT / "examples/shop"),))
        with bot_in_thread(bot_settings, control, relay=False):
            proc = _say(running.url, "/deploy inventory", "--user", "bob")
    assert proc.returncode == 0, proc.stderr
    assert "U0ORCHESTRA: (only you) I did nothing: I don't know a service called `inventory`" in proc.stdout


def test_slack_server_process_and_say_without_a_bot(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = process_env(settings, "unused")
    with orchestra_process(["slack-server", "--port", str(port), "--ack-timeout", "0.5"], env,
                           tmp_path / "slack.log"):
        wait_for(lambda: port_open(port), what="orchestra slack-server")
        proc = _say(f"http://127.0.0.1:{port}/api/", "/orchestra help")
    assert proc.returncode == 0, proc.stderr
    assert "did not acknowledge" in proc.stdout and "operation_timeout" in proc.stdout


def test_say_explains_an_unreachable_workspace() -> None:
    proc = _say(f"http://127.0.0.1:{free_port()}", "/orchestra help")
    assert proc.returncode == 1 and "cannot reach the local Slack workspace" in proc.stderr
