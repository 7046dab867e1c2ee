"""`orchestra demo` without a running product, and when a step does not end as the story says.

The whole story, through Docker, nginx and Prometheus, is played by tests/test_readme.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import bot_in_thread, local_slack, orchestra_process, process_env


def demo(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ORCHESTRA_"))}
    return subprocess.run([sys.executable, "-m", "cli", "demo", "--url", url, *args], capture_output=True,
                          text=True, timeout=timeout, cwd=PROJECT_ROOT, env=env)


def test_without_a_workspace_it_says_how_to_start_the_product() -> None:
    proc = demo(f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "no local Slack workspace answers" in proc.stderr and "`scripts/up`" in proc.stderr


def test_without_a_bot_it_says_so_and_types_nothing(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    with orchestra_process(["slack-server", "--port", str(port)], process_env(settings, "unused"),
                           tmp_path / "slack.log"):
        wait_for(lambda: port_open(port), what="orchestra slack-server")
        proc = demo(f"http://127.0.0.1:{port}")
        from bot.localslack.client import WorkspaceClient
        assert WorkspaceClient(f"http://127.0.0.1:{port}").transcript("devops-orchestra") == []
    assert proc.returncode == 1 and "has no bot connected" in proc.stderr and "`scripts/up`" in proc.stderr


def test_a_step_that_goes_otherwise_is_named_and_the_transcript_printed(settings: Settings, tmp_path: Path) -> None:
    # The folder examples/shop is not the demo repository: it has no branch hotfix-v2.
    with local_slack() as (running, control):
        bot_settings = settings.with_(slack_api_url=running.api_url, repos=(str(PROJECT_ROOT / "examples/shop"),))
        env = process_env(bot_settings, running.api_url, ORCHESTRA_CACHE_DIR=str(tmp_path / "cache"))
        with bot_in_thread(bot_settings, control, relay=True), \
                orchestra_process(["worker"], env, tmp_path / "worker.log"):
            proc = demo(running.url, "--timeout", "90")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "U0ALICE: /deploy frontend hotfix-v2" in proc.stdout  # what it typed, then the channel as it is
    assert "`/deploy frontend hotfix-v2`" in proc.stderr and "cannot be checked out" in proc.stderr
    assert "`scripts/up` serves .state/shop" in proc.stderr  # what to do about it
    assert "/deploy frontend and backend hotfix-v2 to prod" not in proc.stdout  # it stopped at the first step
