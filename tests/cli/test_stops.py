"""SIGTERM (what systemd, Docker and Kubernetes send) stops each process cleanly, as Ctrl-C does."""
from __future__ import annotations

import signal
from pathlib import Path

from redis import Redis
from rq import Worker

from orchestra.settings import Settings
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import local_slack, orchestra_process, process_env


def test_the_bot_closes_its_slack_connection_and_exits_0_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "bot.log"
    with local_slack() as (running, control):
        env = process_env(settings, running.api_url, ORCHESTRA_METRICS_PORT=str(free_port()))
        with orchestra_process(["bot"], env, log) as proc:
            wait_for(lambda: control.health()["sockets"] >= 1, timeout=30, what="the bot connecting")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, log.read_text()
            wait_for(lambda: control.health()["sockets"] == 0, what="the socket-mode connection closed")
    assert "SIGTERM: closing the Slack connection and stopping the relay" in log.read_text()


def test_the_worker_and_its_router_exit_0_on_sigterm_and_unregister(redis: Redis, settings: Settings,
                                                                     tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = process_env(settings, "http://127.0.0.1:9/api/", ORCHESTRA_METRICS_PORT=str(free_port()))
    with orchestra_process(["worker", "--name", "stopping-worker"], env, log) as proc:
        wait_for(lambda: [w.name for w in Worker.all(connection=redis)] == ["stopping-worker"], timeout=30,
                 what="the worker registered")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    assert Worker.all(connection=redis) == []  # a killed worker would still be listed


def test_the_webhook_receiver_exits_0_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "webhooks.log"
    env = process_env(settings, "http://127.0.0.1:9/api/", GITHUB_WEBHOOK_SECRET="s",
                      ORCHESTRA_METRICS_PORT=str(free_port()))
    with orchestra_process(["webhooks", "--port", str(port)], env, log) as proc:
        wait_for(lambda: port_open(port), timeout=30, what="orchestra webhooks")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    assert not port_open(port)
