"""Redis can fail over: Sentinel settings, the checks made before trusting the sentinels, and a real failover.

Every server is a real redis-server (sentinels are `redis-server --sentinel`) on loopback; the
failover is a SIGKILL of the master while events are published and a real `orchestra worker` works.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from redis import Redis, RedisError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from jobs.queue import stage_queue
from orchestra import redisconn
from orchestra.errors import OrchestraError
from orchestra.events import RUN_STREAM, EventBus, EventType
from orchestra.settings import RedisSentinel, Settings
from orchestra.store import Run, RunStatus, RunStore
from tests.support.sentinel import MASTER_NAME, TICKS_STREAM, SentinelTopology, sentinel_topology
from tests.support.services import free_port, port_open, wait_for
from tests.support.slack_workspace import orchestra_process

T = TypeVar("T")
FAILOVER_STREAM = "orchestra:test:failover"


@pytest.mark.parametrize(("env", "refusal"), [
    ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "without REDIS_MASTER_NAME"),
    ({"REDIS_MASTER_NAME": "main"}, "REDIS_MASTER_NAME set without REDIS_SENTINELS"),
    ({"REDIS_SENTINEL_PASSWORD": "pw"}, "REDIS_SENTINEL_PASSWORD set without REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "127.0.0.1", "REDIS_MASTER_NAME": "main"}, "'127.0.0.1' is not HOST:PORT"),
    ({"REDIS_SENTINELS": "127.0.0.1:0", "REDIS_MASTER_NAME": "main"}, "is not HOST:PORT"),
    ({"REDIS_SENTINELS": "127.0.0.1:70000", "REDIS_MASTER_NAME": "main"}, "is not HOST:PORT"),
    ({"REDIS_SENTINELS": "redis://127.0.0.1:26379", "REDIS_MASTER_NAME": "main"}, "is not HOST:PORT"),
    ({"REDIS_SENTINELS": ":pw@127.0.0.1:26379", "REDIS_MASTER_NAME": "main"}, "is not HOST:PORT"),
    ({"REDIS_SENTINELS": "a:1,,b:2", "REDIS_MASTER_NAME": "main"}, "'' is not HOST:PORT"),
    ({"REDIS_SENTINELS": "a:1,a:1", "REDIS_MASTER_NAME": "main"}, "names a sentinel twice"),
    ({"REDIS_SENTINELS": "a:1", "REDIS_MASTER_NAME": "main", "REDIS_URL": "redis://:pw@10.0.0.5:6379/0"},
     "REDIS_URL names a Redis server while REDIS_SENTINELS is set"),
    ({"REDIS_SENTINELS": "a:1", "REDIS_MASTER_NAME": "main", "REDIS_URL": "unix://:pw@/run/redis.sock"},
     "REDIS_URL names a Redis server"),
    ({"REDIS_URL": "redis+cluster://:pw@10.0.0.5:7000/0"}, "Redis Cluster is not supported"),
    ({"REDIS_URL": "rediss+cluster://:pw@10.0.0.5:7000/0"}, "Redis Cluster is not supported"),
])
def test_sentinel_settings_that_cannot_act_are_refused_at_start(env: dict[str, str], refusal: str) -> None:
    with pytest.raises(OrchestraError, match=refusal.replace("+", r"\+").replace("(", r"\(")) as caught:
        Settings.from_env(env)
    assert caught.value.hint


def test_sentinel_settings_are_read_with_ipv6_and_without_a_host_in_the_url() -> None:
    settings = Settings.from_env({"REDIS_SENTINELS": " 10.0.0.5:26379, [::1]:26380 ", "REDIS_MASTER_NAME": "main",
                                  "REDIS_SENTINEL_PASSWORD": "s3", "REDIS_URL": "rediss://app:pw@/2"})
    assert settings.redis_sentinel == RedisSentinel(addresses=(("10.0.0.5", 26379), ("::1", 26380)),
                                                    master_name="main", password="s3")
    assert Settings.from_env({}).redis_sentinel is None


def test_a_redis_cluster_node_is_refused_naming_why(tmp_path: Path) -> None:
    port, topology = free_port(), SentinelTopology(tmp_path, replicas=0, sentinels=0)
    while port + 10000 > 65535:  # a cluster node also listens on its port + 10000 (the cluster bus)
        port = free_port()
    topology._spawn(port, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                           "--dir", str(tmp_path), "--requirepass", topology.password, "--save", ""])
    try:
        with pytest.raises(OrchestraError, match="is a Redis Cluster node: Redis Cluster is not supported"):
            redisconn.connect(f"redis://:{topology.password}@127.0.0.1:{port}/0")
    finally:
        topology.stop()


def test_the_sentinels_are_checked_before_they_are_trusted(tmp_path: Path) -> None:
    with sentinel_topology(tmp_path, replicas=0, sentinels=2) as topo:
        good = Settings.from_env(topo.env()).redis_sentinel
        assert good is not None
        redis = redisconn.connect(topo.url, role="worker", sentinel=good)
        assert redis.ping() and redisconn.master_address(good) == ("127.0.0.1", topo.data_ports[0])

        down = good.addresses[0][0], free_port()  # one sentinel away is an ordinary day
        assert redisconn.connect(topo.url, sentinel=RedisSentinel((down, *good.addresses), MASTER_NAME,
                                                                    good.password)).ping()
        attacks: list[tuple[RedisSentinel, str, str]] = [
            (RedisSentinel((down,), MASTER_NAME, good.password), topo.url, "none of the sentinels"),
            (RedisSentinel(good.addresses, MASTER_NAME, "guessed"), topo.url, "refused REDIS_SENTINEL_PASSWORD"),
            (RedisSentinel(good.addresses, MASTER_NAME, None), topo.url, "REDIS_SENTINEL_PASSWORD is not set"),
            (RedisSentinel(good.addresses, "other", good.password), topo.url, "does not serve the master 'other'"),
            (good, "redis://:guessed@/0", "refused the credentials in REDIS_URL"),
            (good, "redis:///0", "refused the credentials in REDIS_URL"),
        ]
        for sentinel, url, refusal in attacks:
            with pytest.raises(OrchestraError, match=refusal):
                redisconn.connect(url, sentinel=sentinel)


def test_a_sentinel_anybody_may_use_is_refused_unless_in_dev_mode(tmp_path: Path) -> None:
    with sentinel_topology(tmp_path, replicas=0, sentinels=1, open_sentinels=True) as topo:
        sentinel = Settings.from_env(topo.env()).redis_sentinel
        assert sentinel is not None
        with pytest.raises(OrchestraError, match="serves clients that send no password") as caught:
            redisconn.connect(topo.url, sentinel=sentinel)
        assert "requirepass" in (caught.value.hint or "")
        assert redisconn.connect(topo.url, sentinel=sentinel, dev_mode=True).ping()


class Writer(threading.Thread):
    """Publishes events and enqueues tick jobs through one client, as fast as Redis lets it, and keeps
    what Redis acknowledged; errors (Redis away) are counted and the write tried again."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(daemon=True)
        self.bus, self.queue = EventBus(redis, stream=FAILOVER_STREAM), stage_queue(redis)
        self.acked: list[str] = []
        self.jobs: list[str] = []
        self.errors = 0
        self.acked_at: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            self._write(n)
            time.sleep(0.005)

    def _write(self, n: int) -> None:
        event = self._retry(lambda: self.bus.emit("failover", EventType.PROGRESS, "test", n=n))
        self.acked.append(event.id or "")
        self.acked_at.append(time.monotonic())
        if n % 10 == 0:
            job = self._retry(lambda: self.queue.enqueue("tests.support.sentinel.tick", n, job_id=f"tick-{n}"))
            self.jobs.append(job.id)

    def _retry(self, write: Callable[[], T]) -> T:
        while True:
            try:
                return write()
            except RedisError:
                self.errors += 1
                time.sleep(0.05)


def _process_env(topo: SentinelTopology, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "ORCHESTRA_", "REDIS_"))}
    env.update(topo.env(), ORCHESTRA_WORKDIR=str(tmp_path / "work"), ORCHESTRA_SANDBOX="none",
               ORCHESTRA_METRICS_PORT=str(free_port()), ORCHESTRA_REPOS=str(tmp_path), PYTHONUNBUFFERED="1")
    return env


def test_a_failover_mid_run_loses_no_acknowledged_event_and_the_run_and_jobs_finish(tmp_path: Path) -> None:
    with sentinel_topology(tmp_path / "redis", replicas=1, sentinels=3) as topo:
        settings = Settings.from_env(topo.env())
        redis = redisconn.connect(settings.redis_url, role="worker", sentinel=settings.redis_sentinel)
        log = tmp_path / "worker.log"
        with orchestra_process(["worker", "--name", "failover"], _process_env(topo, tmp_path), log) as worker:
            run = RunStore(redis).create(Run(requested_by="U0ALICE", repo="/nowhere", services=["frontend"]))
            writer = Writer(redis)
            writer.start()
            wait_for(lambda: len(writer.jobs) >= 5 and redis.xlen(TICKS_STREAM) >= 3, timeout=20,
                     what=f"the worker running tick jobs (log: {log})")
            # RQ's scheduler, a process the worker forks on a connection rebuilt from ours, works with Sentinel
            later = stage_queue(redis).enqueue_in(timedelta(seconds=1), "tests.support.sentinel.tick", -1)
            wait_for(lambda: later.get_status(refresh=True) == JobStatus.FINISHED, timeout=20,
                     what=f"a scheduled job running (log: {log})")

            old = topo.master_port()
            topo.kill(old)
            killed, acked_before, jobs_before = time.monotonic(), len(writer.acked), len(writer.jobs)
            # the run is cancelled while the master is gone: the router in the worker must finish it
            writer._retry(lambda: EventBus(redis).emit(run.id, EventType.RUN_CANCELLED, "U0ALICE"))
            wait_for(lambda: RunStore(redis).get(run.id).status == RunStatus.CANCELLED, timeout=30,
                     what=f"the worker's router finishing the run after the failover (log: {log})")
            wait_for(lambda: len(writer.jobs) >= jobs_before + 20, timeout=20, what="jobs after the failover")
            first_write = next(t for t in writer.acked_at[acked_before:] if t > killed) - killed
            writer.halt.set()
            writer.join(timeout=10)
            # the job the worker held at the kill may be left behind: "started" with its worker gone, or moved
            # to RQ's intermediate queue with its start never recorded; RQ's maintenance fails either later
            # (a stage job: the router's reaper fails its stage); every other acknowledged job must finish
            held = set(writer.jobs[:jobs_before + 1])
            wait_for(lambda: len(_unfinished(redis, writer.jobs)) <= 1 and set(_unfinished(redis, writer.jobs)) <= held,
                     timeout=30, what=f"every acknowledged job finishing (log: {log})")
            in_flight, taken = _unfinished(redis, writer.jobs), stage_queue(redis).intermediate_queue.get_job_ids()
            assert all(status == JobStatus.STARTED or (status == JobStatus.QUEUED and job_id in taken)
                       for job_id, status in in_flight.items()), (in_flight, taken)
            consistent = time.monotonic() - killed
            assert worker.poll() is None, log.read_text()

        new = topo.master_port()
        assert new != old and not port_open(old)
        master = topo.node(new)
        assert master.config_get("appendfsync") == {"appendfsync": "always"}
        stored = {entry_id.decode() for entry_id, _ in master.xrange(FAILOVER_STREAM)}
        lost = [entry_id for entry_id in writer.acked if entry_id not in stored]
        assert not lost, f"{len(lost)} acknowledged events lost of {len(writer.acked)}: {lost[:5]}"
        ticks = {int(fields[b"n"]) for _, fields in master.xrange(TICKS_STREAM)}
        assert {int(job_id.split("-")[1]) for job_id in writer.jobs if job_id not in in_flight} <= ticks
        run_events = [e[1][b"event"] for e in master.xrange(RUN_STREAM.format(run_id=run.id))]
        assert any(b'"run_finished"' in e for e in run_events)
        print(f"\nfailover: {acked_before} events acknowledged before the SIGKILL, {len(writer.acked)} in all, "
              f"none lost; {len(writer.jobs)} jobs, all finished but {in_flight} (held at the kill); writes failed "
              f"for {first_write:.2f} s ({writer.errors} retries); run finished and every job done "
              f"{consistent:.2f} s after the kill")


def _unfinished(redis: Redis, job_ids: list[str]) -> dict[str, JobStatus | None]:
    jobs = Job.fetch_many(job_ids, connection=redis, serializer=JSONSerializer)
    statuses = {job_id: job.get_status() if job else None for job_id, job in zip(job_ids, jobs, strict=True)}
    return {job_id: status for job_id, status in statuses.items() if status != JobStatus.FINISHED}
