"""A service with the example services' metrics and fault knobs, standard library only.

Runs as a plain process (``python fault_service.py``) or, copied as ``app.py``, in a container.
Environment: APP_VERSION, PORT, HOST, FAULT_ERROR_RATE (0..1), FAULT_LATENCY_MS, FAULT_LEAK_KB,
BASE_LATENCY_MS. /metrics speaks the Prometheus text format: ``http_requests_total{version,status,path}``,
``http_request_duration_seconds`` (histogram, ``version``), ``process_cpu_seconds_total`` and
``process_resident_memory_bytes``.
"""
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15, 0.2,
           0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
VERSION = os.environ.get("APP_VERSION", "v0")
ERROR_RATE = float(os.environ.get("FAULT_ERROR_RATE", "0") or 0)
LATENCY_S = float(os.environ.get("FAULT_LATENCY_MS", "0") or 0) / 1000
BASE_LATENCY_S = float(os.environ.get("BASE_LATENCY_MS", "10") or 0) / 1000
LEAK = int(float(os.environ.get("FAULT_LEAK_KB", "0") or 0) * 1024)
PAGE = os.sysconf("SC_PAGE_SIZE")

_lock = threading.Lock()
_requests = {}  # status -> count
_bucket_counts = [0] * len(BUCKETS)
_sum = [0.0, 0]  # seconds, count
_leaked = []


def observe(status, seconds):
    with _lock:
        _requests[status] = _requests.get(status, 0) + 1
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                _bucket_counts[i] += 1
        _sum[0] += seconds
        _sum[1] += 1


def exposition():
    lines = ["# TYPE http_requests_total counter"]
    with _lock:
        for status, n in sorted(_requests.items()):
            lines.append(f'http_requests_total{{version="{VERSION}",status="{status}",path="/"}} {n}')
        lines.append("# TYPE http_request_duration_seconds histogram")
        for bound, n in zip(BUCKETS, _bucket_counts, strict=True):
            lines.append(f'http_request_duration_seconds_bucket{{version="{VERSION}",le="{bound}"}} {n}')
        lines.append(f'http_request_duration_seconds_bucket{{version="{VERSION}",le="+Inf"}} {_sum[1]}')
        lines.append(f'http_request_duration_seconds_sum{{version="{VERSION}"}} {_sum[0]}')
        lines.append(f'http_request_duration_seconds_count{{version="{VERSION}"}} {_sum[1]}')
    times = os.times()
    with open("/proc/self/statm") as statm:
        resident = int(statm.read().split()[1]) * PAGE
    lines += ["# TYPE process_cpu_seconds_total counter", f"process_cpu_seconds_total {times.user + times.system}",
              "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {resident}"]
    return ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/metrics":
            return self.send(200, exposition(), "text/plain; version=0.0.4")
        if self.path == "/health":
            return self.send(200, b'{"status": "ok"}', "application/json")
        started = time.perf_counter()
        time.sleep(BASE_LATENCY_S * random.uniform(0.8, 1.2) + LATENCY_S)  # noqa: S311
        if LEAK:
            _leaked.append(os.urandom(LEAK))  # random bytes: the pages really are touched
        status = 500 if random.random() < ERROR_RATE else 200  # noqa: S311
        observe(status, time.perf_counter() - started)
        self.send(status, json.dumps({"version": VERSION}).encode(), "application/json")

    def send(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App-Version", VERSION)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # quiet
        return


class Server(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


if __name__ == "__main__":
    Server((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])), Handler).serve_forever()
