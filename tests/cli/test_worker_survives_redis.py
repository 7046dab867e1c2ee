"""A Redis that hangs or restarts never takes `orchestra worker` away: it works again when Redis is back."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis
from rq import Worker
from rq.job import JobStatus

from jobs.queue import stage_queue
from orchestra.settings import PROJECT_ROOT, Settings
from tests.support.restartable_redis import restartable_redis
from tests.support.services import free_port, wait_for
from tests.support.slack_workspace import process_env

TTL = 20  # RQ's socket timeout is then 15 s: a Redis stopped for longer makes its loop quit


def test_the_worker_outlives_a_frozen_and_a_restarted_redis(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with restartable_redis(tmp_path) as server, log.open("wb") as out:
        redis = Redis.from_url(server.url)
        env = {**process_env(settings, "http://127.0.0.1:9/api/", ORCHESTRA_METRICS_PORT=str(free_port())),
               "REDIS_URL": server.url}
        proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--no-router", "--name", "w",
                                 "--worker-ttl", str(TTL)], env=env, cwd=PROJECT_ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            _registered(redis, log)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGSTOP)  # Redis hangs longer than the worker's socket timeout
            time.sleep(TTL - 15 + 10 + 3)
            server.proc.send_signal(signal.SIGCONT)
            wait_for(lambda: "working again" in log.read_text(), timeout=30, what="the worker saying it goes on")
            _registered(redis, log)
            server.stop()  # every connection dropped, and nobody answers for a while
            time.sleep(3)
            server.start()
            redis = Redis.from_url(server.url)
            _registered(redis, log)
            assert proc.poll() is None, log.read_text()
            job = stage_queue(redis).enqueue("os.getpid")
            wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=60,
                     what=f"a job run after Redis came back (log: {log})")
            assert job.return_value() not in (None, os.getpid())
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    assert code == 0, log.read_text()


def _registered(redis: Redis, log: Path) -> None:
    wait_for(lambda: [w.name for w in Worker.all(connection=redis)] == ["w"], timeout=60,
             what=f"the worker registered (log: {log.read_text()})")
