"""A redis-server with a password on a fixed loopback port that a test can freeze, stop and start again."""
from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import free_port, port_open, wait_for


class RestartableRedis:
    """A redis-server with a password on a fixed loopback port, which the test stops, freezes and restarts.

    Its data survives a restart (AOF, every write synced), as a production Redis's does.
    """

    def __init__(self, directory: Path) -> None:
        self.port, self.secret, self.directory = free_port(), secrets.token_hex(16), directory
        self.url = f"redis://:{self.secret}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(shutil.which("redis-server")), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
             "--requirepass", self.secret],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), what="redis-server")

    def freeze(self) -> None:
        """Stop answering (SIGSTOP) while keeping every connection open: a hung Redis."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        self.proc.terminate()
        self.proc.wait(timeout=10)


@contextmanager
def restartable_redis(directory: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
