"""The router outlives a bad stream entry and a Redis restart; /healthz tells a hung Redis at once.

Real redis-server (frozen with SIGSTOP, stopped and started again), the real router and processes.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from redis import Redis

from jobs.router import Router
from orchestra import health
from orchestra.events import DEAD_LETTER_STREAM, EVENTS_STREAM, EventBus, EventType, dead_letters
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.support.restartable_redis import RestartableRedis, restartable_redis
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import process_env


def _cancel_is_handled(redis: Redis) -> None:
    """A new run, cancelled: the router must finish it."""
    run = RunStore(redis).create(Run(requested_by="U0ALICE", repo="/nowhere", services=["frontend"]))
    EventBus(redis).emit(run.id, EventType.RUN_CANCELLED, "U0ALICE")
    wait_for(lambda: RunStore(redis).get(run.id).status == RunStatus.CANCELLED, timeout=60,
             what=f"the router finishing {run.id}")


def test_the_router_outlives_a_bad_entry_and_a_redis_restart(settings: Settings, tmp_path: Path) -> None:
    with restartable_redis(tmp_path) as server:
        redis = Redis.from_url(server.url)
        stop = threading.Event()
        router = threading.Thread(target=Router(redis, settings.with_(redis_url=server.url)).run, args=(stop,))
        router.start()
        try:
            wait_for(lambda: redis.exists(EVENTS_STREAM), what="the router's consumer group")
            bad = [redis.xadd(EVENTS_STREAM, {"event": "{not json"}), redis.xadd(EVENTS_STREAM, {"other": "x"}),
                   redis.xadd(EVENTS_STREAM, {"event": json.dumps({"type": "no_such_type"})})]
            _cancel_is_handled(redis)  # the entries before it did not stop the router
            dead = {d["entry_id"]: d for d in dead_letters(redis)}
            assert {e.decode() for e in bad} <= set(dead)
            assert all(d["reason"].startswith("not an event") for d in dead.values())

            server.stop()
            wait_for(lambda: health.report()[1]["loops"]["router"]["failing_for_s"] is not None, timeout=20,
                     what="the router reporting the outage")
            time.sleep(2)
            server.start()
            _cancel_is_handled(Redis.from_url(server.url))
            assert health.report()[1]["loops"]["router"]["error"] == ""
            assert router.is_alive()
        finally:
            stop.set()
            router.join(timeout=30)
    assert redis.connection_pool is not None and DEAD_LETTER_STREAM  # the names the test relied on


def _healthz(port: int) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, json.loads(body), time.monotonic() - started


def _frozen_for_five_seconds(server: RestartableRedis, port: int) -> list[tuple[int, dict[str, Any], float]]:
    """Freeze Redis for 5 s, asking /healthz every half second meanwhile."""
    answers = []
    server.freeze()
    try:
        for _ in range(10):
            answers.append(_healthz(port))
            time.sleep(0.5)
    finally:
        server.thaw()
    return answers


def test_a_workers_healthz_answers_at_once_and_says_when_redis_hangs(settings: Settings, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "worker.log"
    with restartable_redis(tmp_path) as server, log.open("wb") as out:
        env = {**process_env(settings, "http://127.0.0.1:9/api/", ORCHESTRA_METRICS_PORT=str(port - 1)),
               "REDIS_URL": server.url}
        proc = subprocess.Popen([sys.executable, "-m", "cli", "worker"], env=env, cwd=PROJECT_ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(port), timeout=30, what=f"the worker's /healthz (log: {log})")
            wait_for(lambda: _healthz(port)[1]["loops"].get("router", {}).get("ok"), timeout=30,
                     what="the router's first step")
            status, body, _ = _healthz(port)
            assert status == 200 and body["redis"]["ok"]
            answers = _frozen_for_five_seconds(server, port)
            assert max(seconds for _, _, seconds in answers) < 0.2
            assert answers[-1][0] == 503 and not answers[-1][1]["redis"]["ok"]
            wait_for(lambda: _healthz(port)[0] == 200, timeout=30, what="healthy again after Redis came back")
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_the_webhook_receivers_healthz_answers_within_200_ms_while_redis_hangs(settings: Settings,
                                                                               tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "webhooks.log"
    with restartable_redis(tmp_path) as server, log.open("wb") as out:
        env = {**process_env(settings, "http://127.0.0.1:9/api/"), "REDIS_URL": server.url,
               "GITHUB_WEBHOOK_SECRET": "s"}
        proc = subprocess.Popen([sys.executable, "-m", "cli", "webhooks", "--port", str(port)], env=env,
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(port), timeout=30, what=f"orchestra webhooks (log: {log})")
            wait_for(lambda: _healthz(port)[0] == 200, timeout=30, what="healthy")
            answers = _frozen_for_five_seconds(server, port)
            assert max(seconds for _, _, seconds in answers) < 0.2
            assert answers[-1][0] == 503
            wait_for(lambda: _healthz(port)[0] == 200, timeout=30, what="healthy again after Redis came back")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
