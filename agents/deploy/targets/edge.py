"""The nginx edge of one service in one environment: weighted upstreams, graceful reloads.

Each edge has its own prefix directory (config, pid, logs). A weight of 0 is written as ``down``
(nginx rejects ``weight=0``). Every config carries a generation number that nginx itself serves at
``/__orchestra/generation``, so a caller can wait until the new workers took over. The access log
is JSON with the upstream, the version behind it, status and timings, for the observe stage.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchestra.errors import OrchestraError, StageFailed

logger = logging.getLogger(__name__)

WORKERS = 1
_SAFE_VERSION = re.compile(r"[A-Za-z0-9._-]{1,128}")
GENERATION_PATH = "/__orchestra/generation"
LOG_FORMAT = (
    "'{\"time\":\"$time_iso8601\",\"version\":\"$orchestra_version\",\"upstream_addr\":\"$upstream_addr\","
    "\"status\":$status,\"upstream_status\":\"$upstream_status\",\"request_time\":$request_time,"
    "\"upstream_response_time\":\"$upstream_response_time\",\"method\":\"$request_method\","
    "\"uri\":\"$request_uri\"}'")


@dataclass(frozen=True)
class Backend:
    """One upstream server: a release's port, its version and its share of traffic (percent)."""

    port: int
    version: str
    weight: int


class Edge:
    """An nginx instance in front of one service and environment."""

    def __init__(self, prefix: Path, port: int, *, name: str = "app") -> None:
        self.prefix = prefix
        self.port = port
        self.name = name
        self.conf = prefix / "nginx.conf"
        self.pid_file = prefix / "nginx.pid"
        self.access_log = prefix / "logs" / "access.json"
        self.error_log = prefix / "logs" / "error.log"

    @classmethod
    def for_service(cls, workdir: Path, service: str, env: str, port: int) -> Edge:
        return cls(workdir / "edge" / f"{service}-{env}", port, name=f"{service}-{env}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def render(self, backends: list[Backend], generation: int) -> str:
        """The nginx config for these backends."""
        for backend in backends:
            if not _SAFE_VERSION.fullmatch(backend.version):
                raise StageFailed(f"edge {self.name}: version {backend.version!r} is not a safe name",
                                  hint="versions are letters, digits, dots, dashes and underscores")
        if not any(b.weight > 0 for b in backends):
            raise StageFailed(f"edge {self.name}: no backend would take traffic")
        servers = "\n".join(
            f"        server 127.0.0.1:{b.port} " + (f"weight={b.weight};" if b.weight > 0 else "down;")
            for b in backends)
        versions = "\n".join(f'        "127.0.0.1:{b.port}" "{b.version}";' for b in backends)
        p = self.prefix
        return _TEMPLATE.format(prefix=p, servers=servers, versions=versions, port=self.port,
                                generation=generation, workers=WORKERS, log_format=LOG_FORMAT, gen_path=GENERATION_PATH)

    def apply(self, backends: list[Backend], *, timeout: float = 10.0) -> int:
        """Write, test and load the config (start nginx or reload it gracefully); wait until it serves."""
        generation = self.generation() + 1
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        (self.prefix / "temp").mkdir(exist_ok=True)
        candidate = self.prefix / "nginx.conf.next"
        candidate.write_text(self.render(backends, generation))
        self._nginx("-t", conf=candidate)
        candidate.replace(self.conf)
        if self.running():
            self._nginx("-s", "reload")
        else:
            self._nginx()
        self._wait_generation(generation, timeout)
        self._wait_old_workers(timeout)
        logger.info("edge %s on port %s: generation %s %s", self.name, self.port, generation,
                    {b.version: b.weight for b in backends})
        return generation

    def generation(self) -> int:
        """The generation of the config on disk (0 before the first)."""
        if not self.conf.exists():
            return 0
        for line in self.conf.read_text().splitlines():
            if line.strip().startswith("# generation "):
                return int(line.split()[-1])
        return 0

    def serving_generation(self) -> int | None:
        try:
            with urllib.request.urlopen(self.url + GENERATION_PATH, timeout=1) as response:
                return int(response.read().decode().strip())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and Path(f"/proc/{pid}").exists()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (QUIT): in-flight requests finish."""
        pid = self.pid()
        if pid is None or not self.running():
            return
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _wait_generation(self, generation: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serving_generation() == generation:
                return
            time.sleep(0.05)
        raise StageFailed(f"edge {self.name} did not load its new config within {timeout}s",
                          hint=f"see {self.error_log}")

    def _wait_old_workers(self, timeout: float) -> None:
        """Old workers stop accepting once they exit; until then a few requests may still see the old
        weights. Clients with long keep-alive connections can hold them: that is not an error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self._workers()) > WORKERS:
            time.sleep(0.02)

    def _workers(self) -> list[str]:
        pid = self.pid()
        try:
            return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []

    def _nginx(self, *args: str, conf: Path | None = None) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        cmd = [binary, "-p", f"{self.prefix}/", "-c", str(conf or self.conf), "-e", str(self.error_log),
               *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise OrchestraError(f"nginx {' '.join(args) or 'start'} failed for edge {self.name}: "
                                 f"{proc.stderr.strip()}", hint=f"see {self.error_log}")


_TEMPLATE = """\
# Generated by DevOps Orchestra: the edge of one service and environment.
# generation {generation}
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format orchestra escape=json {log_format};
    access_log {prefix}/logs/access.json orchestra;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    map $upstream_addr $orchestra_version {{
        default "";
{versions}
    }}
    upstream app {{
{servers}
    }}
    # No upstream keep-alive: apps that write headers and body separately would meet Nagle's
    # algorithm and delayed ACKs (40 ms per request), and a switch leaves no idle connection behind.
    server {{
        listen 127.0.0.1:{port};
        location = {gen_path} {{
            access_log off;
            return 200 "{generation}";
        }}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            add_header X-Orchestra-Upstream $upstream_addr always;
        }}
    }}
}}
"""
