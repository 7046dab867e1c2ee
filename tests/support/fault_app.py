"""A tiny HTTP service with the example services' metrics and fault knobs, run as a plain process.

    python -m tests.support.fault_app      (reads APP_VERSION, PORT, HOST, FAULT_ERROR_RATE,
                                            FAULT_LATENCY_MS, FAULT_LEAK_KB, BASE_LATENCY_MS)

Like examples/shop/backend it exposes /health, /metrics with ``http_requests_total{version,status,path}``
and ``http_request_duration_seconds{version}``, and misbehaves on request. It has no dependency beyond
prometheus-client, so it runs outside Docker (canary tests before the nginx edge, the benchmark).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from tests.support.services import free_port, port_open, wait_for

BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15, 0.2,
           0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
REQUESTS = Counter("http_requests_total", "HTTP requests", ["version", "status", "path"])
DURATION = Histogram("http_request_duration_seconds", "Request latency", ["version"], buckets=BUCKETS)
_LEAK: list[bytes] = []


class Knobs:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.version = env.get("APP_VERSION", "v0")
        self.error_rate = float(env.get("FAULT_ERROR_RATE", "0"))
        self.latency_s = float(env.get("FAULT_LATENCY_MS", "0")) / 1000
        self.base_latency_s = float(env.get("BASE_LATENCY_MS", "10")) / 1000
        self.leak = int(float(env.get("FAULT_LEAK_KB", "0")) * 1024)


class Handler(BaseHTTPRequestHandler):
    knobs: Knobs

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/metrics":
            return self._send(200, generate_latest(), CONTENT_TYPE_LATEST, record=False)
        if self.path == "/health":
            return self._send(200, b"ok", "text/plain", record=False)
        started = time.perf_counter()
        k = self.knobs
        time.sleep(k.base_latency_s * random.uniform(0.8, 1.2) + k.latency_s)  # noqa: S311
        if k.leak:
            _LEAK.append(os.urandom(k.leak))  # random bytes: the pages really get touched
        status = 500 if random.random() < k.error_rate else 200  # noqa: S311
        DURATION.labels(k.version).observe(time.perf_counter() - started)
        self._send(status, f"{k.version}\n".encode(), "text/plain", record=True)

    def _send(self, status: int, body: bytes, ctype: str, *, record: bool) -> None:
        if record:
            REQUESTS.labels(self.knobs.version, str(status), "/").inc()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App-Version", self.knobs.version)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


def main() -> None:
    Handler.knobs = Knobs(os.environ)
    ThreadingHTTPServer.request_queue_size = 128
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler)
    server.serve_forever()


@contextmanager
def fault_app(version: str, **faults: float) -> Iterator[int]:
    """Run the app as a process on a free loopback port; yields the port. Faults: error_rate,
    latency_ms, leak_kb, base_latency_ms."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.getcwd(), "APP_VERSION": version,
           "PORT": str(port), "HOST": "127.0.0.1",
           **{f"FAULT_{k.upper()}" if k != "base_latency_ms" else "BASE_LATENCY_MS": str(v)
              for k, v in faults.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fault_app"], env=env)  # noqa: S603
    try:
        wait_for(lambda: port_open(port), timeout=10, what=f"fault app {version} on port {port}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
