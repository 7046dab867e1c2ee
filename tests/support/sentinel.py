"""A Redis Sentinel topology on loopback: a master, replicas and sentinels, each a real redis-server.

The data nodes keep an AOF synced on every write (``appendfsync always``) and ask for a password; the
sentinels ask for their own unless ``open_sentinels``. Every process started here is stopped on exit,
by its PID (SIGTERM, then SIGKILL), whether or not the test killed some of them first.
"""
from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from rq import get_current_job

from tests.support.services import free_port, port_open, wait_for

MASTER_NAME = "orchestra-test"
DOWN_AFTER_MS = 1000
TICKS_STREAM = "orchestra:test:ticks"


class SentinelTopology:
    """``replicas`` replicas of one master, watched by ``sentinels`` sentinels (quorum: a majority)."""

    def __init__(self, directory: Path, *, replicas: int = 1, sentinels: int = 3, open_sentinels: bool = False) -> None:
        self.directory, self.open_sentinels = directory, open_sentinels
        self.password, self.sentinel_password = secrets.token_hex(16), secrets.token_hex(16)
        self.data_ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # port -> process
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS for this topology."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    @property
    def url(self) -> str:
        """REDIS_URL for this topology: the password, no host (the sentinels say where the master is)."""
        return f"redis://:{self.password}@/0"

    def env(self) -> dict[str, str]:
        """The Redis variables an `orchestra` process needs to use this topology."""
        env = {"REDIS_URL": self.url, "REDIS_SENTINELS": self.sentinels, "REDIS_MASTER_NAME": MASTER_NAME}
        if not self.open_sentinels:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def start(self) -> None:
        master, *replicas = self.data_ports
        self._data_node(master, [])
        for port in replicas:
            self._data_node(port, ["--replicaof", "127.0.0.1", str(master)])
        for port in self.sentinel_ports:
            self._sentinel(port, master)
        wait_for(self._ready, timeout=20, interval=0.1, what="the sentinels seeing the replicas and each other")

    def node(self, port: int) -> Redis:
        return Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=2)

    def sentinel(self, port: int) -> Redis:
        password = None if self.open_sentinels else self.sentinel_password
        return Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2, decode_responses=True)

    def master_port(self, sentinel_port: int | None = None) -> int:
        """The master's port as a sentinel tells it."""
        _, port = self.sentinel(sentinel_port or self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def kill(self, port: int) -> None:
        """SIGKILL the server on ``port``: no shutdown, no last write."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=5)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _ready(self) -> bool:
        others = len(self.sentinel_ports) - 1
        for port in self.sentinel_ports:
            state = self.sentinel(port).sentinel_master(MASTER_NAME)
            if int(state["num-slaves"]) < len(self.data_ports) - 1 or int(state["num-other-sentinels"]) < others:
                return False
        return all(self.node(p).info("replication").get("master_link_status") == "up" for p in self.data_ports[1:])

    def _data_node(self, port: int, extra: list[str]) -> None:
        folder = self.directory / f"redis-{port}"
        folder.mkdir(parents=True)
        self._spawn(port, [str(shutil.which("redis-server")), "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder),
                           "--requirepass", self.password, "--masterauth", self.password, *extra])

    def _sentinel(self, port: int, master: int) -> None:
        quorum = len(self.sentinel_ports) // 2 + 1
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {self.directory}",
                 f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} {quorum}",
                 f"sentinel auth-pass {MASTER_NAME} {self.password}",
                 f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                 f"sentinel failover-timeout {MASTER_NAME} 10000"]
        if not self.open_sentinels:
            lines += [f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
        conf = self.directory / f"sentinel-{port}.conf"
        conf.write_text("\n".join(lines) + "\n")  # the sentinel rewrites it: its own file
        self._spawn(port, [str(shutil.which("redis-server")), str(conf), "--sentinel"])

    def _spawn(self, port: int, argv: list[str]) -> None:
        log = (self.directory / f"{port}.log").open("wb")
        self.procs[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: port_open(port), what=f"{argv[-1] if argv[-1] == '--sentinel' else 'redis-server'} on {port}")


@contextmanager
def sentinel_topology(directory: Path, **options: object) -> Iterator[SentinelTopology]:
    topology = SentinelTopology(directory, **options)  # type: ignore[arg-type]
    try:
        topology.start()
        yield topology
    finally:
        topology.stop()


def tick(n: int) -> int:
    """An RQ job for the failover test: writes ``n`` through the worker's own connection."""
    job = get_current_job()
    assert job is not None
    job.connection.xadd(TICKS_STREAM, {"n": n})
    return n
