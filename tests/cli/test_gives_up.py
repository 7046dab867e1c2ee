"""A process that cannot recover says so on /healthz, exits with code 75, and `orchestra up` starts it again.

Real redis-server (stopped, and its ACL changed under a running worker), real `orchestra worker`,
`orchestra webhooks` and `orchestra up` processes, with ORCHESTRA_GIVE_UP_S at its 5 s minimum.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from orchestra.errors import OrchestraError
from orchestra.health import EXIT_GAVE_UP
from orchestra.settings import Settings
from tests.support.restartable_redis import restartable_redis
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import orchestra_process, process_env

GIVE_UP_S = 5.0


def _healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def _env(settings: Settings, url: str, **extra: str) -> dict[str, str]:
    return {**process_env(settings, "http://127.0.0.1:9/api/", ORCHESTRA_GIVE_UP_S=str(GIVE_UP_S), **extra),
            "REDIS_URL": url}


def test_a_worker_rides_out_a_short_outage_and_gives_up_on_a_loop_that_keeps_failing(settings: Settings,
                                                                                    tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "worker.log"
    with restartable_redis(tmp_path) as server, \
            orchestra_process(["worker"], _env(settings, server.url, ORCHESTRA_METRICS_PORT=str(port - 1)),
                              log) as proc:
        wait_for(lambda: _healthz(port)[1].get("loops", {}).get("router", {}).get("ok"), timeout=30,
                 what=f"the worker's router stepping (log: {log})")
        down_at = time.monotonic()
        server.stop()  # shorter than the limit: nothing gives up
        wait_for(lambda: _healthz(port)[0] == 503, timeout=5, what="unwell while Redis is down")
        time.sleep(max(0.0, down_at + GIVE_UP_S - 2 - time.monotonic()))
        server.start()
        wait_for(lambda: _healthz(port)[0] == 200, timeout=15, what=f"well again (log: {log})")
        time.sleep(max(0.0, down_at + GIVE_UP_S + 1 - time.monotonic()))
        assert proc.poll() is None and _healthz(port)[0] == 200, log.read_text()

        # Redis answers, but the router may no longer read its stream: reconnecting cannot help
        Redis.from_url(server.url).execute_command("ACL", "SETUSER", "default", "-xreadgroup")
        broken_at = time.monotonic()
        wait_for(lambda: _healthz(port)[1].get("gives_up_in_s") is not None, timeout=GIVE_UP_S,
                 what="/healthz counting down to giving up")
        status, body = _healthz(port)
        router = body["loops"]["router"]
        assert status == 503 and not router["ok"] and "NoPermission" in router["error"]
        code = proc.wait(timeout=GIVE_UP_S + 20)
        gone_after = time.monotonic() - broken_at
    text = log.read_text()
    assert code == EXIT_GAVE_UP, text
    assert re.search(r"giving up: the router loop has failed every try for \d+ s \(last error: NoPermissionError", text)
    assert "Traceback" not in text.split("giving up:")[1]  # it stopped the way SIGTERM stops it
    assert GIVE_UP_S <= gone_after < GIVE_UP_S + 10, gone_after
    print(f"router failing -> exit {code} after {gone_after:.1f} s")


def test_orchestra_up_restarts_a_receiver_that_gave_up_on_redis(settings: Settings, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "up.log"
    (tmp_path / "Procfile").write_text(f"webhooks: exec {sys.executable} -m cli webhooks --port {port}\n")
    with restartable_redis(tmp_path) as server, \
            orchestra_process(["up", "--procfile", str(tmp_path / "Procfile")],
                              _env(settings, server.url, GITHUB_WEBHOOK_SECRET="s"), log) as up:
        wait_for(lambda: _healthz(port)[0] == 200, timeout=30, what=f"orchestra webhooks (log: {log})")
        first = _pid(port)
        server.stop()  # longer than the limit
        down_at = time.monotonic()
        wait_for(lambda: _healthz(port)[0] == 503, timeout=5, what="unwell while Redis is down")
        status, body = _healthz(port)
        assert status == 503 and body["status"] == "unwell" and body["gives_up_in_s"] <= GIVE_UP_S
        wait_for(lambda: "webhooks gave up (exit code 75" in log.read_text(), timeout=GIVE_UP_S + 25,
                 what=f"orchestra up saying the receiver gave up (log: {log})")
        gave_up_after = time.monotonic() - down_at
        # the receiver started again waits for Redis instead of failing at once (5 quick exits stop everything)
        wait_for(lambda: "cannot reach Redis" in log.read_text().split("webhooks gave up")[1], timeout=10,
                 what=f"the new receiver waiting for Redis (log: {log})")
        time.sleep(1)
        server.start()
        up_again = time.monotonic()
        wait_for(lambda: _healthz(port)[0] == 200, timeout=30, what=f"the receiver started again (log: {log})")
        back_after = time.monotonic() - up_again
        assert up.poll() is None and _pid(port) != first
    text = log.read_text()
    assert re.search(r"giving up: Redis has not answered for \d+ s", text), text
    assert "restarting it in 0.5 s" in text and "stopping everything" not in text
    print(f"Redis down -> webhooks exit 75 after {gave_up_after:.1f} s; serving again {back_after:.1f} s after "
          "Redis came back")


def _pid(port: int) -> int:
    """The pid of the process listening on ``port`` (the receiver, started by `orchestra up`)."""
    wait_for(lambda: port_open(port), what="the port")
    out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def test_a_give_up_limit_that_would_not_let_healthz_speak_first_is_refused() -> None:
    for value in ("2", "soon", "nan", "-1"):
        with pytest.raises(OrchestraError, match=f"ORCHESTRA_GIVE_UP_S={value!r} is not a number of seconds"):
            Settings.from_env({"ORCHESTRA_GIVE_UP_S": value})
    assert Settings.from_env({"ORCHESTRA_GIVE_UP_S": "120"}).give_up_s == 120.0
    assert Settings.from_env({}).give_up_s == 300.0
