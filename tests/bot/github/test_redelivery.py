"""A delivery is marked handled only together with what handling it did; a hung Redis gets a 503.

`orchestra webhooks` as a real process, a real redis-server frozen with SIGSTOP, real SIGKILLs.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from redis import Redis

from bot.github.handoff import DELIVERY_ONCE
from orchestra.settings import PROJECT_ROOT, Settings
from orchestra.store import ONCE_KEY, ONCE_LEASE_S, begin_once, finish_once, release_once
from tests.support.github_payloads import SECRET, body_of, headers, load
from tests.support.restartable_redis import restartable_redis
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import process_env


def test_a_request_is_new_once_pending_while_handled_and_new_again_after_its_lease(redis: Redis) -> None:
    assert begin_once(redis, "k", lease_s=1) == "new"
    assert begin_once(redis, "k", lease_s=1) == "pending"
    time.sleep(1.2)  # the first handler died without finishing: its lease ran out
    assert begin_once(redis, "k", lease_s=1) == "new"
    finish_once(redis, "k")
    assert begin_once(redis, "k") == "done"


def test_a_claim_is_released_only_by_the_token_that_made_it(redis: Redis) -> None:
    assert begin_once(redis, "k", token="mine") == "new"
    release_once(redis, "k", "theirs")
    assert begin_once(redis, "k") == "pending"
    release_once(redis, "k", "mine")
    assert begin_once(redis, "k") == "new"


def _deliver(port: int, delivery: str) -> tuple[int, dict[str, Any], dict[str, str], float]:
    body = body_of(load("pull_request.opened.payload.json"))
    request = urllib.request.Request(f"http://127.0.0.1:{port}/github/webhook", data=body,
                                     headers=headers("pull_request", body, delivery=delivery))
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers), time.monotonic() - started


def _healthz_seconds(port: int) -> float:
    started = time.monotonic()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
    except urllib.error.HTTPError:
        pass
    return time.monotonic() - started


@contextmanager
def webhooks(settings: Settings, redis_url: str, tmp_path: Path, github_url: str) -> Iterator[tuple[int, Path]]:
    repo = tmp_path / "Codertocat" / "Hello-World"  # served for the owner/name its path ends in
    (repo / "backend").mkdir(parents=True, exist_ok=True)
    (repo / "devops_orchestra.yaml").write_text(
        "project:\n  name: hello\ndeployment:\n  services:\n    - name: backend\n      path: backend\n")
    port, log = free_port(), tmp_path / "webhooks.log"
    env = {**process_env(settings, "http://127.0.0.1:9/api/"), "REDIS_URL": redis_url,
           "GITHUB_WEBHOOK_SECRET": SECRET, "GITHUB_TOKEN": "ghs-test", "GITHUB_API_URL": github_url,
           "ORCHESTRA_REPOS": str(repo)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "webhooks", "--port", str(port), "--no-relay"],
                                env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(port), timeout=30, what=f"orchestra webhooks (log: {log})")
            yield port, log
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def silent_github() -> Iterator[str]:
    """An address that accepts connections and never answers: a hand-off that reaches it hangs there."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_with_redis_hung_a_delivery_gets_503_with_retry_after_and_health_still_answers(
        settings: Settings, tmp_path: Path) -> None:
    with restartable_redis(tmp_path) as server, silent_github() as github, \
            webhooks(settings, server.url, tmp_path, github) as (port, _):
        delivery = str(uuid.uuid4())
        server.freeze()
        try:
            answers: list[tuple[int, dict[str, Any], dict[str, str], float]] = []
            sender = threading.Thread(target=lambda: answers.append(_deliver(port, delivery)))
            sender.start()
            health = [_healthz_seconds(port) for _ in range(5)]  # while the delivery waits on Redis
            sender.join(timeout=10)
        finally:
            server.thaw()
        [(status, body, answer_headers, seconds)] = answers
        assert status == 503 and body["result"] == "unavailable" and answer_headers["Retry-After"] == "10"
        assert seconds < 3 and max(health) < 0.2
        status, body, _, _ = _deliver(port, delivery)  # GitHub's redelivery, Redis back
        assert (status, body["result"]) == (202, "accepted")


def test_a_receiver_killed_mid_hand_off_leaves_the_delivery_open_to_a_redelivery(settings: Settings,
                                                                                   tmp_path: Path) -> None:
    with restartable_redis(tmp_path) as server, silent_github() as github:
        redis = Redis.from_url(server.url)
        delivery = str(uuid.uuid4())
        key = ONCE_KEY.format(key=DELIVERY_ONCE.format(delivery=delivery))
        with webhooks(settings, server.url, tmp_path, github) as (port, _):
            status, body, _, _ = _deliver(port, delivery)
            assert (status, body["result"]) == (202, "accepted")  # the hand-off now waits on GitHub
            assert _deliver(port, delivery)[1]["result"] == "in_progress"
        # SIGKILLed by the context manager before the hand-off recorded anything
        assert (redis.get(key) or b"").startswith(b"pending:") and 0 < redis.ttl(key) <= ONCE_LEASE_S
        assert redis.get(f"orchestra:github:delivery:{delivery}") is None
        redis.expire(key, 1)  # the lease running out, without waiting its two minutes here
        time.sleep(1.2)
        assert redis.get(key) is None
        with webhooks(settings, server.url, tmp_path, github) as (port, _):
            status, body, _, _ = _deliver(port, delivery)
            assert (status, body["result"]) == (202, "accepted")  # served again, not "duplicate"
